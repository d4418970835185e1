"""The coarse-grained mix search (Q-SiT Algorithm 1, steps 1–2): fits, search strategies, plans."""
