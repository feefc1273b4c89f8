"""Per-client memory in `context.state`: only the head's LoRA and its optimizer state, and only
while a round is in progress (what lets a simulation hold hundreds of virtual clients)."""

import torch
from flwr.app import ConfigRecord, RecordDict

from clients import handlers
from clients.device import Device
from edgesplit.protocol import CONFIG, GRADIENT, LORA, RoundTask
from edgesplit.records import to_record
from edgesplit.settings import DataSettings, LoraSettings
from edgesplit.split_model import SplitModel


def test_state_holds_the_head_adapter_and_adam_moments_then_empties():
    split, steps = 2, 2
    device = Device("tiny-llama", LoraSettings(), DataSettings(corpus="synthetic", block_size=16),
                    partition_id=0, num_partitions=4, node_config={}, step_timeout_s=60.0)
    head = SplitModel("tiny-llama", device.lora).lora_state(range(split))
    task = RoundTask(server_round=1, split=split, local_steps=steps, batch_size=2,
                     learning_rate=1e-3, optimizer="adamw", seed=0)
    state = RecordDict()
    handlers.train_start(RecordDict({CONFIG: task.to_record(), LORA: to_record(head)}), state,
                         device)
    grad = to_record({"hidden": torch.zeros(2, 16, 64)})
    for step in range(steps):
        assert set(state) == {"round.task", "round.lora", "round.optim"}
        lora_bytes = sum(v.numel() * 4 for v in head.values())
        per_array = 512  # serialisation header of one array, generously
        assert state["round.lora"].count_bytes() <= lora_bytes + len(head) * per_array
        # AdamW keeps two moments per LoRA tensor and a scalar step, nothing else.
        assert state["round.optim"].count_bytes() <= 2 * lora_bytes + 3 * len(head) * per_array
        handlers.train_step(RecordDict({CONFIG: ConfigRecord({"step": step}),
                                        GRADIENT: grad}), state, device)
    assert len(state) == 0  # the round is over: nothing left behind
