"""Ratio sweeps on a small model, polynomial fits, and mix plans (Q-SiT Algorithm 1)."""
