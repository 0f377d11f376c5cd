"""The runner behind `recipes/*.py`: the paper's SFT setup on a VersaTune mixture, parsed like TRL's scripts."""
