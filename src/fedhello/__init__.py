"""fedhello: federated LoRA fine-tuning of foundation models on clients with unequal resources."""

__version__ = "0.1.0"
