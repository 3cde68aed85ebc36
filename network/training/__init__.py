"""How a network is trained: the recipes, the time budget that sizes a run to the
machine, the callbacks that make a run safe to interrupt and resume, several devices."""
