"""Sources → records: D1 scoring, D2 quality interpreting, D3 general instructions, the offline corpus."""
