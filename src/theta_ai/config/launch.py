"""What the launcher set up for this process: the number of processes and whether this one is the main one.

torchrun, ``accelerate launch`` and ``torch.distributed.launch`` all export ``WORLD_SIZE`` and ``RANK``
before the process starts; reading them needs no process group, so it works before accelerate's
``PartialState`` exists (it decides, among other things, whether ``TrainingArguments`` must force
``use_cpu``), and it costs nothing on ``theta-train --help``.
"""

from __future__ import annotations

import os


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0
