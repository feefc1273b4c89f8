"""Independent computations the split-federated runs must equal (oracle 2)."""

import torch

from edgesplit.data import federated_text
from edgesplit.placement import BASE_DTYPES
from edgesplit.settings import Settings
from edgesplit.split_model import SplitModel, trainable_copy


def fedavg_of_full_model_training(settings: Settings, num_clients: int, rounds: int):
    """The reference: every client trains full-model LoRA locally on the same batches, then a
    FedAvg weighted by training blocks; written independently of the split code path."""
    model = SplitModel(settings.model_name, settings.lora, seed=settings.seed,
                       dtype=BASE_DTYPES[settings.base_dtype])
    data = federated_text(settings.data, settings.model_name, num_clients)
    global_state = model.lora_state()
    for server_round in range(1, rounds + 1):
        trained, weights = [], []
        for client in range(num_clients):
            shard = data.client(client).train
            params = trainable_copy(global_state)
            opt = torch.optim.AdamW([params[k] for k in sorted(params)],
                                    lr=settings.learning_rate, weight_decay=0.0)
            for step in range(settings.local_steps):
                batch = shard.batch((server_round - 1) * settings.local_steps + step,
                                    settings.batch_size, settings.seed)
                with model.using_lora(params):
                    loss = model.full(batch["input_ids"], batch["attention_mask"],
                                      batch["labels"]).loss
                loss.backward()
                opt.step()
                opt.zero_grad()
            trained.append({k: p.detach() for k, p in params.items()})
            weights.append(len(shard))
        total = sum(weights)
        global_state = {k: sum(t[k] * (w / total) for t, w in zip(trained, weights, strict=True))
                        for k in global_state}
    return global_state
