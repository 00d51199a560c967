"""Resource truth: peak memory and step time of local training per layer set, the cost model fitted to
them, and the conversion of client budgets (`memory_mb`, `seconds_per_step`) into allocation constraints.

Submodules: `memory` (meters), `measure` (one layer set), `cost` (cost model, `LayerConstraint`,
`budget_constraint`), `profile` (representative sets, cache), `budgets` (budgets -> constraints for a
federation, budget check of a finished run), `report` (the tables of `fedhello profile`).
Kept import-light: `training.trainer` imports `resources.memory`, and an allocator may use `cost`.
"""
