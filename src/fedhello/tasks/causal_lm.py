"""Instruction tuning of a decoder-only LM (GPT-2, LLaMA, ...) via `AutoModelForCausalLM`.

Each sample is rendered with an Alpaca-style prompt template; the loss covers the response tokens only
(prompt and padding positions get label -100). Evaluation reports the response loss on the test split
and ROUGE-L F1 of greedy generations for the first `data.max_generate_samples` held-out prompts; the
ROUGE-L score is also reported as `accuracy`, the key of the run's headline metric, which `metric` names
(`rouge_l`: the CLI prints `final rouge_l ...`, summary.json has `final_rouge_l`).

The data set's label column (Dolly category, NI task), where it has one, stays in the preprocessed data as
`labels`, so the label-based and domain partitioners split clients by it; `collate` builds the token labels.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from datasets import Dataset
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM, AutoTokenizer

from fedhello.errors import ConfigError
from fedhello.models.build import load_pretrained
from fedhello.models.precision import autocast
from fedhello.tasks.base import TASKS, Task

PROMPT = (
    "Below is an instruction that describes a task{with_input}. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n{input_block}### Response:\n"
)
IGNORE = -100


def render_prompt(instruction: str, context: str | None) -> str:
    """The prompt for one sample (the context block is left out when the sample has none)."""
    context = (context or "").strip()
    return PROMPT.format(
        with_input=", paired with an input that provides further context" if context else "",
        instruction=instruction.strip(),
        input_block=f"### Input:\n{context}\n\n" if context else "",
    )


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence of two token lists (O(len(a)·len(b)) time, O(len(b)) memory)."""
    if not a or not b:
        return 0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 on lower-cased alphanumeric words (as `rouge_score` without stemming)."""
    pred, ref = _words(prediction), _words(reference)
    lcs = lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


@TASKS.register("causal_lm")
class CausalLMTask(Task):
    auto_model_class = AutoModelForCausalLM
    model_kind = "a causal language model"
    metric = "rouge_l"
    peft_task_type = "CAUSAL_LM"
    processor_class = AutoTokenizer

    def __init__(self, config, num_labels: int) -> None:  # noqa: ANN001 - RunConfig
        super().__init__(config, num_labels)
        self.tokenizer = load_pretrained(AutoTokenizer.from_pretrained, self.model_path, "a tokenizer")
        tok = self.tokenizer
        self.eos_id = tok.eos_token_id if tok.eos_token_id is not None else tok.sep_token_id
        if self.eos_id is None:
            raise ConfigError("model.name_or_path", "the tokenizer has no end-of-sequence token", "use a causal LM")
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else self.eos_id

    def check_base(self, base: torch.nn.Module) -> None:
        names = {name.rsplit(".", 1)[-1] for name, _ in base.named_modules()}
        missing = [m for m in self.config.lora.head_modules if m not in names]
        if missing:
            raise ConfigError("lora.head_modules", f"{missing} not in the model", "use [] for a causal LM")

    def preprocess(self, dataset: Dataset) -> Dataset:
        """Token ids of prompt + response + EOS (at most `model.max_length`; a long prompt is cut from the
        left so the response keeps at least half of the budget), the prompt length, the texts used by
        generation, and the group label."""
        data, max_length = self.config.data, self.config.model.max_length
        tok = self.tokenizer

        def encode(batch: dict[str, list]) -> dict[str, list]:
            instructions = batch[data.instruction_column]
            contexts = batch[data.context_column] if data.context_column in batch else [None] * len(instructions)
            out: dict[str, list] = {"input_ids": [], "prompt_length": [], "prompt": [], "reference": []}
            for instruction, context, response in zip(instructions, contexts, batch[data.response_column], strict=True):
                prompt = render_prompt(instruction, context)
                prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
                response_ids = tok(response.strip(), add_special_tokens=False)["input_ids"] + [self.eos_id]
                keep_prompt = max(max_length - len(response_ids), max_length // 2, 1)
                prompt_ids = prompt_ids[-keep_prompt:]
                ids = (prompt_ids + response_ids)[:max_length]
                out["input_ids"].append(ids)
                out["prompt_length"].append(len(prompt_ids))
                out["prompt"].append(prompt)
                out["reference"].append(response.strip())
            return out

        label = data.label_column
        if label != "labels" and label in dataset.column_names:  # own instruction data may have no groups
            dataset = dataset.rename_column(label, "labels")
        keep = {"labels", self.config.partition.domain_column}
        drop = [c for c in dataset.column_names if c not in keep]
        if data.context_column and data.context_column not in dataset.column_names:
            raise ConfigError("data.context_column", f"'{data.context_column}' not in {dataset.column_names}")
        return dataset.map(encode, batched=True, remove_columns=drop, keep_in_memory=True)

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Right-padded token ids; labels are the ids on response positions and -100 elsewhere."""
        width = max(len(s["input_ids"]) for s in samples)
        input_ids = torch.full((len(samples), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(samples), width), dtype=torch.long)
        labels = torch.full((len(samples), width), IGNORE, dtype=torch.long)
        for row, sample in enumerate(samples):
            ids = torch.tensor(sample["input_ids"], dtype=torch.long)
            input_ids[row, : len(ids)] = ids
            attention[row, : len(ids)] = 1
            labels[row, sample["prompt_length"] : len(ids)] = ids[sample["prompt_length"] :]
        return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}

    def loss_weight(self, batch: dict[str, torch.Tensor]) -> float:
        """The loss is the mean over predicted response tokens (labels shifted by one), not samples."""
        return float((batch["labels"][:, 1:] != IGNORE).sum())

    def generate(self, model: torch.nn.Module, prompts: list[str], batch_size: int = 8) -> list[str]:
        """Greedy completions of `prompts` (left-padded batches), decoded without the prompt."""
        device = next(model.parameters()).device
        keep = max(self.config.model.max_length - self.config.model.max_new_tokens, 1)
        outputs: list[str] = []
        for start in range(0, len(prompts), batch_size):
            encoded = [
                self.tokenizer(p, add_special_tokens=False)["input_ids"][-keep:]
                for p in prompts[start : start + batch_size]
            ]
            width = max(len(ids) for ids in encoded)
            input_ids = torch.full((len(encoded), width), self.pad_id, dtype=torch.long)
            attention = torch.zeros_like(input_ids)
            for row, ids in enumerate(encoded):
                input_ids[row, width - len(ids) :] = torch.tensor(ids)
                attention[row, width - len(ids) :] = 1
            generated = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention.to(device),
                max_new_tokens=self.config.model.max_new_tokens,
                do_sample=False,
                pad_token_id=self.pad_id,
                eos_token_id=self.eos_id,
            )
            outputs.extend(self.tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True))
        return outputs

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, dataset: Dataset) -> dict[str, float]:
        model.eval()
        device = next(model.parameters()).device
        loss_sum, tokens = 0.0, 0
        with autocast(device, self.config.train.precision):
            for batch in DataLoader(dataset, batch_size=16, collate_fn=self.collate):
                batch = {k: v.to(device) for k, v in batch.items()}
                count = int((batch["labels"][:, 1:] != IGNORE).sum())  # predicted positions (shifted)
                loss_sum += model(**batch).loss.float().item() * count
                tokens += count
            n = min(self.config.data.max_generate_samples, len(dataset))
            scored = dataset.select(range(n))
            predictions = self.generate(model, scored["prompt"]) if n else []
        scores = [rouge_l(p, r) for p, r in zip(predictions, scored["reference"] if n else [], strict=True)]
        rouge = sum(scores) / len(scores) if scores else 0.0
        return {"accuracy": rouge, "rougeL": rouge, "loss": loss_sum / max(tokens, 1)}
