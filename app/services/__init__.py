"""Use cases: the rules, the clock and the crypto; never HTTP, never a commit."""
