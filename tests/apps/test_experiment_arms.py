"""Experiment arms that warm-start from earlier arms, the candidate-objective arm and
compute-matched updates."""

import pathlib

import pytest

from spark_jax.apps import experiment
from spark_jax.apps.experiment import ExperimentConfig, arm_dir, arm_name, parse_arm

EXPERIMENT_CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs" / "experiments"


def test_warm_started_and_candidate_arms():
    assert parse_arm("ppo:lowest_viable@sft") == ("ppo", "lowest_viable", "sft")
    assert parse_arm("sft:greedy") == ("sft", "greedy", "")
    assert arm_name("cand:lowest_viable@sft") == "CAND-rarity-from-SFT"
    assert arm_dir("ppo:lowest_viable@sft") == "train_ppo_lowest_viable_from_sft"
    assert arm_dir("sft:greedy") == "train_sft_greedy"  # unchanged: earlier runs resume
    cfg = ExperimentConfig(arms=("sft:lowest_viable", "cand:lowest_viable@sft"))
    tc = experiment.train_config(cfg, "cand", "data", init_from="runs/sft")
    assert tc.algo == "ppo" and tc.candidates.loss == "xent" and not tc.candidates.token_header
    assert tc.init_from == "runs/sft" and tc.kl_reference == "init"
    sft = experiment.train_config(cfg, "sft", "data")
    assert sft.updates_per_step == tc.updates_per_step == 2 and sft.init_from == ""
    assert experiment.train_config(ExperimentConfig(remat=True), "sft", "data").remat
    with pytest.raises(ValueError, match="must be an earlier arm"):
        ExperimentConfig(arms=("ppo:lowest_viable@sft",))
    with pytest.raises(ValueError, match="algo from"):
        ExperimentConfig(arms=("dpo:lowest_viable",))


@pytest.mark.parametrize("config_name", ["smollm2_seeds.yaml", "smollm2_seeds_20steps.yaml"])
def test_seeded_experiment_config_loads_with_every_arm(config_name):
    from spark_jax.apps.experiment import arm_name, parse_arm
    from spark_jax.core.config_io import load_config
    from spark_jax.eval.paired import claim_pairs

    cfg = load_config(ExperimentConfig, str(EXPERIMENT_CONFIGS / config_name), [])
    names = ["base", *(arm_name(a) for a in cfg.arms)]
    assert names == ["base", "SFT-greedy", "PPO-greedy-from-SFT", "SFT-rarity", "SFT-rarity-from-SFT",
                     "PPO-rarity-from-SFT", "CAND-rarity-from-SFT"]
    # each warm-start source is followed by the arms that start from it, so a resume without
    # checkpoints retrains a source at most once per interruption
    sources = [f"{init}:{selection}" if init else arm for arm in cfg.arms for _, selection, init in [parse_arm(arm)]]
    assert all(sources.index(s) == i or sources[i - 1] == s for i, s in enumerate(sources))
    assert len(cfg.seeds) >= 3 and cfg.updates_per_batch == 2
    pairs = claim_pairs(names)
    assert ("PPO-rarity-from-SFT", "SFT-rarity-from-SFT") in pairs
    assert ("CAND-rarity-from-SFT", "SFT-rarity") in pairs


def test_twelve_hour_config_differs_from_the_first_seeded_run_only_in_its_steps():
    import dataclasses

    from spark_jax.core.config_io import load_config

    first = load_config(ExperimentConfig, str(EXPERIMENT_CONFIGS / "smollm2_seeds.yaml"), [])
    sized = load_config(ExperimentConfig, str(EXPERIMENT_CONFIGS / "smollm2_seeds_20steps.yaml"), [])
    assert (first.train_steps, sized.train_steps) == (40, 20)
    assert dataclasses.replace(sized, train_steps=first.train_steps) == first
