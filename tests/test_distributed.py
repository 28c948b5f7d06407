"""Multi-process training on CPU: two real processes (gloo backend) started by torchrun, by the legacy
``torch.distributed.launch`` and by ``accelerate launch``, plus the accelerate configs in configs/accelerate/.

What a two-process run must do (docs/multi_gpu.md):

* each rank trains on its own half of every epoch (disjoint shards that together cover the data);
* the ranks agree: the same logged training loss, the same (gathered) validation metrics, bit-identical weights;
* one set of checkpoints, written by rank 0 only, holding one RNG state per rank;
* the banner shows the effective batch: 4 per device x 1 accumulation x 2 processes = 8;
* ``--resume auto`` with the same world size finishes with the weights of the uninterrupted run, from an
  epoch checkpoint and from a stop request's mid-epoch ``theta_checkpoint_step_S`` (the length-grouped
  order of the resumed epoch, not epoch 0's, with the right batches skipped).

The recorder runs are this file run as a script by torchrun (``python -m torch.distributed.run
--nproc_per_node 2 tests/test_distributed.py VALUES.json OUT_DIR [SIGTERM_STEP]``): it calls theta_ai's
library (``prepare_run`` + ``train``) with a TrainerCallback that writes, per rank, the training examples the
rank's batches held, the logged and evaluated losses and a digest of the final weights. With SIGTERM_STEP,
rank 0 sends itself SIGTERM at the end of that optimizer step (a stop request, as from a scheduler).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE_CONFIGS = ROOT / "configs" / "accelerate"
WORLD = 2
N_RECORDS = 48  # 48 train examples / (4 per device x 2 processes) = 6 optimizer steps per epoch
STEPS_PER_EPOCH = 6
SMALL = {"epochs": 2.0, "batch_size": 4, "grad_accum": 1, "max_seq_length": 64, "warmup_steps": 1,
         "learning_rate": 0.002, "logging_steps": 1}
BANNER_BATCH = f"effective batch 8 = 4 per device x 1 accumulation x {WORLD} process(es)"
EPOCH_DIRS = ["theta_best", "theta_checkpoint_epoch_1", "theta_checkpoint_epoch_2", "theta_final"]


# ---------------------------------------------------------------------------- helpers (test side)


def cli_args(values: dict) -> list[str]:
    """theta-train flags for a values dict (``data`` lists become repeated flags)."""
    args = []
    for key, value in values.items():
        flag = "--" + key.replace("_", "-")
        for item in value if isinstance(value, list) else [value]:
            args += [flag, str(item)]
    return args


def launch(cmd: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
               TQDM_DISABLE="1", PYTHONUNBUFFERED="1")
    env.pop("ACCELERATE_USE_CPU", None)  # the runs must work from the launcher's environment alone
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        output = proc.stdout + proc.stderr
        first_error = max(0, output.find("Traceback"))  # the failing rank's own traceback, not only the launcher's
        pytest.fail(f"{shlex.join(cmd)} failed ({proc.returncode}):\n{output[first_error:first_error + 5000]}\n"
                    f"...\n{output[-2000:]}", pytrace=False)
    return proc


def output_of(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(WORLD), *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def weights_digest(tensors: dict) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def file_digest(folder: Path) -> str:
    from safetensors.torch import load_file

    return weights_digest(load_file(str(folder / "model.safetensors")))


def assert_one_checkpoint_set(models: Path, epochs: int = 2) -> None:
    """theta_checkpoint_epoch_1..N, theta_best and theta_final once each; no per-rank or staging copies."""
    expected = ["theta_best"] + [f"theta_checkpoint_epoch_{e}" for e in range(1, epochs + 1)] + ["theta_final"]
    assert sorted(p.name for p in models.iterdir()) == expected
    for epoch in range(1, epochs + 1):
        folder = models / f"theta_checkpoint_epoch_{epoch}"
        files = {p.name for p in folder.iterdir()}
        assert {f"rng_state_{r}.pth" for r in range(WORLD)} <= files, files
        assert "rng_state.pth" not in files  # the one-process name: Trainer did not see two processes
        state = json.loads((folder / "trainer_state.json").read_text())
        assert state["global_step"] == epoch * STEPS_PER_EPOCH  # steps of the sharded data, not of all of it


def single_log_folder(logs: Path) -> tuple[Path, set[int]]:
    """The one run folder under ``logs`` and the process ids that wrote TensorBoard events into it."""
    runs = [p for p in logs.iterdir() if p.is_dir()]
    assert len(runs) == 1, f"one run log folder expected (rank 0 writes logs), found {sorted(p.name for p in runs)}"
    events = list(runs[0].glob("events.out.tfevents.*"))  # events.out.tfevents.<time>.<host>.<pid>.<n>
    assert events, f"no TensorBoard events in {runs[0]}"
    return runs[0], {int(p.name.split(".")[-2]) for p in events}


def tiny_values(tmp: Path, **overrides) -> dict:
    from theta_fixtures import tiny_train_config

    values = tiny_train_config(tmp, n=N_RECORDS, **SMALL)
    values.update(overrides)
    return values


def recorder_values(tmp: Path, **overrides) -> dict:
    """The recorder runs' settings: :func:`tiny_values` without the generated answers at each evaluation (these
    runs check shards, losses, weights and resuming; the CLI runs below keep the default ``--generation-eval``)."""
    return tiny_values(tmp, generation_eval=0, **overrides)


# ---------------------------------------------------------------------------- the recorder (worker side)


def _worker(values_file: str, out_dir: str, sigterm_step: str = "") -> int:
    """Run by torchrun on every rank: theta_ai's training with a recording collator and callback."""
    import signal

    from transformers import TrainerCallback

    from theta_ai.config import resolve_config
    from theta_ai.training.run import prepare_run, train

    rank = int(os.environ["RANK"])
    cfg = resolve_config(json.loads(Path(values_file).read_text()))
    run = prepare_run(cfg)
    index_of = {tuple(row["input_ids"]): i for i, row in enumerate(run.train_dataset)}
    record: dict = {"rank": rank, "pid": os.getpid(), "banner": run.banner(), "batches": [], "train_loss": [],
                    "eval": []}
    collate = run.collator

    def recording_collator(features):
        indices = [index_of.get(tuple(f["input_ids"])) for f in features]
        if all(i is not None for i in indices):  # a training batch (validation rows are not in the index)
            record["batches"].append(indices)
        return collate(features)

    class Recorder(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if rank == 0 and sigterm_step and state.global_step == int(sigterm_step):
                os.kill(os.getpid(), signal.SIGTERM)  # GracefulStopCallback shares it with rank 1 next step

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                record["train_loss"].append([state.global_step, logs["loss"]])

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            record["eval"].append({k: v for k, v in (metrics or {}).items() if k in ("eval_loss", "eval_token_accuracy")})

        def on_train_end(self, args, state, control, model=None, **kwargs):
            record.update(world_size=args.world_size, process_index=args.process_index,
                          global_step=state.global_step, digest=weights_digest(model.state_dict()),
                          tokens_seen=state.num_input_tokens_seen, lengths=list(run.train_dataset["length"]))

    run.collator = recording_collator
    train(cfg, prepared=run, callbacks=[Recorder()])
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(record))

    import torch.distributed as dist

    if dist.is_initialized():  # leave together: no rank exits while another still talks to it
        dist.barrier()
        dist.destroy_process_group()
    return 0


def recorded(out_dir: Path) -> list[dict]:
    return [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(WORLD)]


def run_recorder(tmp: Path, values: dict, out_dir: Path, sigterm_step: int | None = None) -> list[dict]:
    values_file = tmp / f"{out_dir.name}.json"
    values_file.write_text(json.dumps(values))
    extra = [] if sigterm_step is None else [str(sigterm_step)]
    launch(torchrun(str(Path(__file__).resolve()), str(values_file), str(out_dir), *extra), cwd=tmp)
    return recorded(out_dir)


# ---------------------------------------------------------------------------- torchrun + theta_ai's library


@pytest.fixture(scope="module")
def recorder_runs(tmp_path_factory):
    """An uninterrupted two-process run, then the same run resumed from its epoch-1 checkpoint."""
    tmp = tmp_path_factory.mktemp("ddp")
    values = recorder_values(tmp)
    fresh = run_recorder(tmp, values, tmp / "record_fresh")
    models = tmp / "models"
    listing = sorted(p.name for p in models.iterdir())
    final_digest = file_digest(models / "theta_final")
    for name in ("theta_checkpoint_epoch_2", "theta_best", "theta_final"):
        shutil.rmtree(models / name)
    resumed = run_recorder(tmp, dict(values, resume="auto"), tmp / "record_resumed")
    return {"tmp": tmp, "fresh": fresh, "resumed": resumed, "listing": listing, "final_digest": final_digest}


def test_trainer_sees_two_processes(recorder_runs):
    for rank, rec in enumerate(recorder_runs["fresh"]):
        assert (rec["world_size"], rec["process_index"]) == (WORLD, rank)
        assert BANNER_BATCH in rec["banner"]
        assert rec["global_step"] == 2 * STEPS_PER_EPOCH


def test_ranks_train_on_disjoint_shards_covering_the_data(recorder_runs):
    ranks = recorder_runs["fresh"]
    for rec in ranks:
        assert len(rec["batches"]) == 2 * STEPS_PER_EPOCH and all(len(b) == 4 for b in rec["batches"])
    for epoch in range(2):
        shards = [[i for b in rec["batches"][epoch * STEPS_PER_EPOCH:(epoch + 1) * STEPS_PER_EPOCH] for i in b]
                  for rec in ranks]
        assert all(len(s) == len(set(s)) == N_RECORDS // WORLD for s in shards)
        assert set(shards[0]).isdisjoint(shards[1])
        assert set(shards[0]) | set(shards[1]) == set(range(N_RECORDS))
    # a new order every epoch (the sampler is reseeded per epoch)
    assert ranks[0]["batches"][:STEPS_PER_EPOCH] != ranks[0]["batches"][STEPS_PER_EPOCH:]


def test_the_token_count_sums_both_processes_once_per_log(recorder_runs):
    """Each process counts its batches' real tokens on the CPU; ThetaTrainer.log sums them over the processes."""
    for rec in recorder_runs["fresh"]:
        assert rec["tokens_seen"] == 2 * sum(rec["lengths"])  # every training example twice, over both ranks


def test_ranks_agree_on_losses_and_weights(recorder_runs):
    rank0, rank1 = recorder_runs["fresh"]
    assert len(rank0["train_loss"]) >= 2 * STEPS_PER_EPOCH and rank0["train_loss"] == rank1["train_loss"]
    assert len(rank0["eval"]) == 2 and rank0["eval"] == rank1["eval"]  # validation metrics are gathered
    assert rank0["digest"] == rank1["digest"]  # DDP kept the replicas bit-identical


def test_rank_zero_writes_one_set_of_checkpoints(recorder_runs):
    assert recorder_runs["listing"] == EPOCH_DIRS
    models = recorder_runs["tmp"] / "models"
    assert_one_checkpoint_set(models)  # after the resumed run too
    # rank 0 of the first run and rank 0 of the resumed run (which continues in the same folder), nobody else
    _, writers = single_log_folder(recorder_runs["tmp"] / "logs")
    assert writers == {recorder_runs["fresh"][0]["pid"], recorder_runs["resumed"][0]["pid"]}
    best = json.loads((models / "theta_best" / "theta_best.json").read_text())
    assert best["epoch"] in (1, 2) and best["metric"] == "eval_loss"


def test_resume_with_the_same_world_size_is_bit_exact(recorder_runs):
    fresh, resumed = recorder_runs["fresh"], recorder_runs["resumed"]
    for before, after in zip(fresh, resumed):
        # the resumed run replays exactly epoch 2 of the uninterrupted one, batch for batch, on every rank
        assert after["batches"] == before["batches"][STEPS_PER_EPOCH:]
        assert after["global_step"] == before["global_step"]
        assert after["eval"] == before["eval"][1:]
        assert after["digest"] == before["digest"]
    models = recorder_runs["tmp"] / "models"
    assert file_digest(models / "theta_final") == recorder_runs["final_digest"]


@pytest.mark.extended
def test_stop_mid_epoch_then_resume_replays_the_length_grouped_order_exactly(recorder_runs, tmp_path):
    """SIGTERM on rank 0 in the middle of the second epoch -> theta_checkpoint_step_9 -> ``resume="auto"``.

    Trainer resumes mid-epoch through accelerate's ``skip_first_batches``, which puts the length-grouped
    sampler under SkipBatchSampler -> BatchSamplerShard -> BatchSampler: it must still draw the second
    epoch's order (seed + 1), not the first epoch's, or the wrong batches are skipped and replayed.
    """
    fresh = recorder_runs["fresh"]  # the uninterrupted run, same settings (length grouping, the default)
    stop_at = STEPS_PER_EPOCH + 3  # SIGTERM after step 8; the stop is shared, and saved, at step 9
    replayed = slice(stop_at, 2 * STEPS_PER_EPOCH)  # the second epoch's batches after the resume point
    same_place_first_epoch = slice(stop_at - STEPS_PER_EPOCH, STEPS_PER_EPOCH)
    for rec in fresh:  # the two epochs' orders differ where the resume lands, so a wrong epoch seed shows
        assert rec["batches"][replayed] != rec["batches"][same_place_first_epoch]

    values = recorder_values(tmp_path)
    stopped = run_recorder(tmp_path, values, tmp_path / "record_stopped", sigterm_step=stop_at - 1)
    models = tmp_path / "models"
    assert sorted(p.name for p in models.iterdir()) == ["theta_best", "theta_checkpoint_epoch_1",
                                                         f"theta_checkpoint_step_{stop_at}"]
    for before, rec in zip(fresh, stopped):
        assert rec["global_step"] == stop_at  # both ranks stopped at the same step
        assert rec["batches"][:stop_at] == before["batches"][:stop_at]

    resumed = run_recorder(tmp_path, dict(values, resume="auto"), tmp_path / "record_resumed")
    for rank, (before, after) in enumerate(zip(fresh, resumed)):
        assert after["batches"] == before["batches"][replayed], (
            f"rank {rank}: resumed with {after['batches']}, the uninterrupted run's second epoch after step "
            f"{stop_at} is {before['batches'][replayed]} (its first epoch at the same place: "
            f"{before['batches'][same_place_first_epoch]})")
        assert after["global_step"] == before["global_step"]
        assert after["eval"] == before["eval"][1:]
        assert after["digest"] == before["digest"]
    assert sorted(p.name for p in models.iterdir()) == EPOCH_DIRS  # the step checkpoint was superseded
    assert file_digest(models / "theta_final") == recorder_runs["final_digest"]


def test_sampler_gets_its_epoch_under_accelerates_mid_epoch_resume_wrappers():
    """In-process and fast: the sampler chain of a 2-process mid-epoch resume, and what reaches the sampler.

    ``skip_first_batches`` of a 2-process ``DataLoaderShard`` puts the sampler under SkipBatchSampler ->
    BatchSamplerShard -> BatchSampler, where the loader's ``set_epoch`` does not arrive (accelerate 1.15.0);
    theta_ai's SamplerEpochCallback gives it the epoch from ``state.epoch`` at ``on_epoch_begin``.
    """
    from accelerate.data_loader import BatchSamplerShard, SkipBatchSampler, prepare_data_loader, skip_first_batches
    from torch.utils.data import DataLoader
    from transformers import TrainerControl, TrainerState

    from theta_ai.training.trainer import SamplerEpochCallback, SeededLengthGroupedSampler

    sampler = SeededLengthGroupedSampler(4, lengths=[10 + (i * 7) % 13 for i in range(N_RECORDS)], seed=42)
    shard = prepare_data_loader(DataLoader(list(range(N_RECORDS)), batch_size=4, sampler=sampler),
                                num_processes=WORLD, process_index=0, put_on_device=False)

    def epoch_batches(loader, epoch):
        loader.set_epoch(epoch)  # what Trainer calls on the (possibly skipping) loader of each epoch
        return [batch.tolist() for batch in loader]

    first, second = epoch_batches(shard, 0), epoch_batches(shard, 1)
    assert second[3:] != first[3:]
    sampler.set_epoch(0)  # a fresh process: the sampler starts at epoch 0
    resumed = skip_first_batches(shard, 3)
    assert isinstance(resumed.batch_sampler, SkipBatchSampler)
    assert isinstance(resumed.batch_sampler.batch_sampler, BatchSamplerShard)
    state = TrainerState()
    state.epoch = 1.5  # restored from theta_checkpoint_step_9: half of the second epoch
    SamplerEpochCallback(sampler).on_epoch_begin(None, state, TrainerControl())
    assert epoch_batches(resumed, 1) == second[3:]


def test_the_private_trainer_method_theta_overrides_keeps_its_signature():
    """ThetaTrainer._get_train_sampler overrides a private Trainer method (transformers 5.24.0): fail if it moves."""
    import inspect

    from transformers import Trainer

    params = list(inspect.signature(Trainer._get_train_sampler).parameters)
    assert params == ["self", "train_dataset"], f"Trainer._get_train_sampler is now {params}: see theta_ai/trainer.py"
    assert "sampler_fn=self._get_train_sampler" in inspect.getsource(Trainer.get_train_dataloader)


def test_resume_with_another_world_size_is_refused(recorder_runs, monkeypatch):
    """Steps per epoch and shards depend on the process count: one process must not resume a 2-process run."""
    from theta_ai.config import ConfigError, resolve_config
    from theta_ai.training.run import prepare_run

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    values = recorder_values(recorder_runs["tmp"], resume="auto")
    with pytest.raises(ConfigError, match=r"2-process run .* 1 process"):
        prepare_run(resolve_config(values))


# ---------------------------------------------------------------------------- the CLI under each launcher


def test_torchrun_cli(tmp_path):
    """theta-train under torchrun with the default settings, the generated answers at each evaluation included."""
    values = tiny_values(tmp_path)
    proc = launch(torchrun("-m", "theta_ai.cli.train", *cli_args(values)), cwd=tmp_path)
    out = output_of(proc)
    assert f"world size {WORLD}" in out and out.count(BANNER_BATCH) == 1  # printed by rank 0 only
    assert_one_checkpoint_set(tmp_path / "models")
    run_folder, writers = single_log_folder(tmp_path / "logs")
    assert len(writers) == 1  # one process writes TensorBoard events
    assert (run_folder / "train.log").read_text().count(BANNER_BATCH) == 1  # and the run log: rank 0


@pytest.mark.extended
def test_legacy_torch_distributed_launch(tmp_path):
    """``python -m torch.distributed.launch ... --distributed``: deprecated, still shipped; it adds --local-rank=N."""
    pytest.importorskip("torch.distributed.launch", reason="torch.distributed.launch was removed: use torchrun")
    values = tiny_values(tmp_path, epochs=1.0, generation_eval=0)  # generated answers: test_torchrun_cli's run
    cmd = [sys.executable, "-m", "torch.distributed.launch", "--standalone", f"--nproc_per_node={WORLD}",
           "-m", "theta_ai.cli.train", *cli_args(values), "--distributed"]
    out = output_of(launch(cmd, cwd=tmp_path))
    assert f"world size {WORLD}" in out and BANNER_BATCH in out
    assert_one_checkpoint_set(tmp_path / "models", epochs=1)


def test_accelerate_launch_with_the_ddp_config(tmp_path):
    """configs/accelerate/ddp_2gpu.yaml starts two processes (on CPU too: a MULTI_GPU config falls back to gloo).

    Not ``accelerate launch --cpu --num_processes 2``: accelerate's --cpu uses its one-process launcher.
    """
    values = tiny_values(tmp_path, epochs=1.0, generation_eval=0)  # generated answers: test_torchrun_cli's run
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ACCELERATE_CONFIGS / "ddp_2gpu.yaml"),
           "--main_process_port", str(free_port()), "-m", "theta_ai.cli.train", *cli_args(values)]
    out = output_of(launch(cmd, cwd=tmp_path))
    assert f"world size {WORLD}" in out and BANNER_BATCH in out
    assert_one_checkpoint_set(tmp_path / "models", epochs=1)


# ---------------------------------------------------------------------------- configs/accelerate/*.yaml

CONFIGS = {"single_gpu.yaml": ("NO", 1, 1), "ddp_2gpu.yaml": ("MULTI_GPU", 2, 1),
           "multi_node_ddp.yaml": ("MULTI_GPU", 4, 2), "fsdp.yaml": ("FSDP", 2, 1)}


def header_commands(path: Path) -> list[list[str]]:
    """The ``accelerate launch ...`` commands written in the file's leading comment block."""
    commands = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if text.startswith("accelerate launch "):
            commands.append(shlex.split(text)[2:])
    return commands


def launch_args(argv: list[str]):
    """accelerate's own parsing and validation of a launch command line (config file merged in)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(argv))
    return args


def test_every_accelerate_config_is_here():
    assert sorted(p.name for p in ACCELERATE_CONFIGS.glob("*.yaml")) == sorted(CONFIGS)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_accelerate_config_loads_and_its_command_parses(name, monkeypatch):
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file

    path = ACCELERATE_CONFIGS / name
    lines = path.read_text().splitlines()
    assert lines[0].startswith(f"# accelerate launch --config_file configs/accelerate/{name} ")
    config = load_config_from_file(str(path))  # what `accelerate launch --config_file` reads
    assert isinstance(config, ClusterConfig)
    distributed_type, processes, machines = CONFIGS[name]
    assert (config.distributed_type, config.num_processes, config.num_machines) == (distributed_type, processes, machines)
    assert config.to_dict() == ClusterConfig.from_yaml_file(str(path)).to_dict()  # (to_dict turns enums into str)
    commands = header_commands(path)
    assert commands, f"{name}: no `accelerate launch` command in the header comment"
    monkeypatch.chdir(ROOT)  # the commands use repository-relative paths
    for argv in commands:
        assert argv[:2] == ["--config_file", f"configs/accelerate/{name}"]
        assert argv[argv.index("-m") + 1] == "theta_ai.cli.train"
        args = launch_args(argv)
        assert args.num_processes == processes and args.num_machines == machines


def test_multi_node_config_placeholders():
    path = ACCELERATE_CONFIGS / "multi_node_ddp.yaml"
    text = path.read_text()
    for key in ("machine_rank", "main_process_ip", "main_process_port"):
        assert any(line.startswith(f"{key}:") and "PLACEHOLDER" in line for line in text.splitlines()), key
    node0, node1 = header_commands(path)
    assert launch_args(node0).machine_rank == 0
    assert launch_args(node1).machine_rank == 1


def test_fsdp_config_builds_the_fsdp2_plugin_and_wraps_transformer_blocks(monkeypatch):
    """The launcher's FSDP_* environment -> accelerate's plugin -> one FSDP unit per GPT2Block / LlamaDecoderLayer."""
    import torch
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
    from accelerate.utils.launch import prepare_multi_gpu_env
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    monkeypatch.chdir(ROOT)
    args = launch_args(header_commands(ACCELERATE_CONFIGS / "fsdp.yaml")[0])
    assert args.use_fsdp and str(args.fsdp_version) == "2"
    env = prepare_multi_gpu_env(args)
    for key, value in env.items():
        if key.startswith(("FSDP_", "ACCELERATE_")):
            monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True  # FSDP2's FULL_SHARD
    assert "FULL_STATE_DICT" in str(plugin.state_dict_type)  # checkpoints keep one model.safetensors

    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=2, n_head=2,
                                      bos_token_id=0, eos_token_id=0))
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32,
                                         bos_token_id=0, eos_token_id=0, pad_token_id=0))
    for model, block in ((gpt2, "GPT2Block"), (llama, "LlamaDecoderLayer")):
        wraps = fsdp2_prepare_auto_wrap_policy(plugin, model)  # no class list: the model's _no_split_modules
        assert [type(m).__name__ for m in model.modules() if wraps(m)] == [block, block]
        # the commented-out alternatives in fsdp.yaml: one pinned class works, both at once cannot
        assert f"# fsdp_transformer_layer_cls_to_wrap: {block}" in (ACCELERATE_CONFIGS / "fsdp.yaml").read_text()
        plugin.transformer_cls_names_to_wrap = [block]
        wraps = fsdp2_prepare_auto_wrap_policy(plugin, model)
        assert [type(m).__name__ for m in model.modules() if wraps(m)] == [block, block]
        plugin.transformer_cls_names_to_wrap = ["GPT2Block", "LlamaDecoderLayer"]
        with pytest.raises(ValueError, match="Could not find the transformer layer class"):
            fsdp2_prepare_auto_wrap_policy(plugin, model)
        plugin.transformer_cls_names_to_wrap = None


if __name__ == "__main__":
    sys.exit(_worker(*sys.argv[1:]))
