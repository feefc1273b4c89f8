"""Who a device is: its model, its data shard, its profile and (in tests) the fault it injects.

`fl_app.client_app` builds one per message from the run config and the node config, handing it
only the settings a device uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from flwr.app import ArrayRecord

from clients import faults
from clients.cache import head_model
from clients.profile import DeviceProfile, device_profile
from edgesplit.data import ClientShard, federated_text
from edgesplit.placement import BASE_DTYPES, resolve_device
from edgesplit.records import from_record, lora_spec
from edgesplit.settings import DataSettings, LoraSettings, PrivacySettings
from edgesplit.split_model import SplitModel
from edgesplit.splits import check_split, device_layers


@dataclass(frozen=True)
class Device:
    """One device's identity and resources.

    model_name : str
    lora : LoraSettings
    data : DataSettings
    partition_id, num_partitions : int
        Which shard of the federated corpus is this device's.
    node_config : mapping
        The node config (deployment: its declared profile, `device.*` keys).
    step_timeout_s : float
        The server's patience per exchange (bounds a stream call, paces injected faults).
    fault : str or None (default: None)
        The fault this device injects in every round (`clients.faults.KINDS`), for tests.
    fault_rate : float (default: 0.0)
        Otherwise, the chance it injects one in a round, of a kind drawn from `fault_kinds`.
    fault_kinds : tuple of str (default: every kind)
        The kinds a random fault is drawn from.
    base_dtype : str (default: "float32")
        The frozen base's precision (`edgesplit.placement.BASE_DTYPES`).
    torch_device : str (default: "cpu")
        Where the head runs (`compute.client-device`: auto, cpu, cuda, cuda:<i>).
    activation_noise_std : float (default: 0.0)
        Gaussian noise this device adds to every activation it sends, relative to each
        sequence's median token RMS (`edgesplit.activation_noise`); 0 = none.
    privacy : PrivacySettings, optional
        This device's differential privacy budget for what it sends (`clients.privacy`).
    """

    model_name: str
    lora: LoraSettings
    data: DataSettings
    partition_id: int
    num_partitions: int
    node_config: Mapping[str, object]
    step_timeout_s: float
    fault: str | None = None
    base_dtype: str = "float32"
    torch_device: str = "cpu"
    fault_rate: float = 0.0
    fault_kinds: tuple[str, ...] = faults.KINDS
    activation_noise_std: float = 0.0
    privacy: PrivacySettings | None = None

    def fault_in(self, server_round: int) -> str | None:
        """The fault this device injects in `server_round`, if any."""
        return self.fault or faults.drawn(self.fault_rate, self.fault_kinds, self.data.seed,
                                          server_round, self.partition_id)

    def shard(self) -> ClientShard:
        return federated_text(self.data, self.model_name, self.num_partitions).client(
            self.partition_id)

    def profile(self) -> DeviceProfile:
        return device_profile(self.node_config, self.partition_id, self.data.seed)

    def model(self, split: int, device_tail_layers: int = 0) -> SplitModel:
        """The frozen model this device trains on: a head of `split` layers, or the whole
        model when it also runs a U-shaped split's last `device_tail_layers` layers."""
        return head_model(self.model_name, self.lora, split, whole=device_tail_layers > 0,
                          dtype=BASE_DTYPES[self.base_dtype],
                          device=resolve_device(self.torch_device, "compute.client-device"))

    def received_lora(self, record: ArrayRecord, split: int,
                      device_tail_layers: int = 0) -> dict[str, torch.Tensor]:
        """The adapter the server sent, checked against this device's layers."""
        model = self.model(split, device_tail_layers)
        check_split(split, model.num_layers, device_tail_layers)
        layers = device_layers(split, model.num_layers, device_tail_layers)
        # Only the keys and shapes matter: no need to copy the weights on every message.
        return from_record(record, lora_spec(model.lora_parameters(layers)))
