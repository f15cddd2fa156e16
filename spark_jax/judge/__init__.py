"""Judges that score the nine candidate actions of a step on 0-10."""
