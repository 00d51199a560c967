"""Resource truth: peak memory and step time of local training per layer set, the cost model fitted to
them, and the conversion of client budgets (`memory_mb`, `seconds_per_step`) into allocation constraints.

Submodules: `memory` (meters), `measure` (one layer set), `cost` (cost model, `LayerConstraint`,
`budget_constraint`), `profile` (representative sets, cache), `budgets` (federation wiring and report).
Kept import-light: `training.trainer` imports `resources.memory`.
"""
