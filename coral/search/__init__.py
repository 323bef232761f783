"""The search box: genomes, the cellular automaton, cheap knobs and search strategies."""
