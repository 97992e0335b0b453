"""Collecting one epoch of rollouts of any backbone: prompts from the k-repeat sampler, SDE trajectories with
their log-probs (or ODE samples), and rewards computed in a background thread while the next batch is being
sampled.

Between batches every process checks, together, whether to give the epoch up (flow_grpo.training.stopping):
a stop signal, or a reward that failed or missed ``config.reward_deadline_s`` on any process.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from concurrent.futures import Executor, Future
from concurrent.futures import TimeoutError as FutureTimeout

import numpy as np
import torch
from tqdm.auto import tqdm

from flow_grpo.data import DistributedKRepeatSampler, PromptDataset
from flow_grpo.rollout_types import Rollout, concatenate
from flow_grpo.backbones.base import Backbone
from flow_grpo.backbones.generation import SampleNoise, SamplingSpec, initial_latents, sample
from flow_grpo.rollout_types import Conditioning
from flow_grpo.sampling_loop import scheduled_window_start
from flow_grpo.rewards import RewardError
from flow_grpo.seeding import generator_for
from flow_grpo.training.phases import Timer, no_timer
from flow_grpo.training.sizes import frame_size
from flow_grpo.collectives import agree
from flow_grpo.training.stopping import REWARD_FAILED, RUNNING, EpochAbandoned


class RewardThread(Executor):
    """One daemon thread that runs submitted calls in order. A reward that hangs past its deadline is left
    behind in it and cannot keep the process from exiting (``ThreadPoolExecutor``'s threads are joined at exit)."""

    def __init__(self, name: str = "reward"):
        self._calls: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            item = self._calls.get()
            if item is None:
                return
            future, fn, args = item
            if future.set_running_or_notify_cancel():
                try:
                    with torch.no_grad():  # grad mode is per thread: a reward never needs gradients
                        future.set_result(fn(*args))
                except BaseException as error:  # noqa: BLE001 - handed to the waiting caller
                    future.set_exception(error)

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future = Future()
        self._calls.put((future, lambda *a: fn(*a, **kwargs), args))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if cancel_futures:
            while True:
                try:
                    item = self._calls.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[0].cancel()
        self._calls.put(None)
        # an idle thread ends now, before the interpreter's shutdown; only a hung call is left behind
        self._thread.join(timeout=None if wait else 5.0)


def numeric_info(info: dict, count: int) -> dict[str, np.ndarray]:
    """The per-image numeric columns of a reward's info (GenEval's per-tag correctness, NaN for other tags)."""
    columns = {}
    for key in sorted(info):
        value = np.asarray(info[key])
        if value.dtype.kind in "fiub" and value.shape == (count,):
            columns[key] = value.astype(np.float64)
    return columns


def reward_name(reward_fn) -> str:
    """The reward a hung call is waiting on: the one ``MultiReward`` is running, with its server if remote."""
    functions = getattr(reward_fn, "functions", {})
    name = getattr(reward_fn, "running", None) or ", ".join(functions) or "the reward"
    client = getattr(functions.get(name), "client", None)
    return f"reward {name!r}" + (f" (reward server {client.url})" if client is not None else "")


def call_with_deadline(reward_fn, args: tuple, deadline_s: float, what: str):
    """``reward_fn(*args)``, or a RewardError naming the reward and ``what`` after ``deadline_s`` seconds (0: wait)."""
    if not deadline_s:
        return reward_fn(*args)
    thread = RewardThread()
    try:
        return thread.submit(reward_fn, *args).result(timeout=deadline_s)
    except FutureTimeout:
        raise RewardError(f"{reward_name(reward_fn)} gave no answer for {what} within config.reward_deadline_s = {deadline_s:g} s") from None
    finally:
        thread.shutdown(wait=False)


@dataclasses.dataclass
class RolloutCollector:
    """What sampling an epoch needs; :meth:`collect` does it. ``transformer`` is the trained one, unwrapped."""

    backbone: Backbone
    transformer: torch.nn.Module
    negative: Conditioning | None  # the negative prompt, one row (None for a family without a negative pass)
    dataset: PromptDataset
    sampler: DistributedKRepeatSampler
    reward_fn: object  # fn(images, prompts, metadata) -> (columns, info), e.g. flow_grpo.rewards.multi_score
    executor: Executor  # runs the reward of a batch while the next one is sampled
    accelerator: object
    config: object
    timer: Timer = no_timer  # phases: prompt_encoding, sampling, vae_decode, reward_wait
    stop: object = None  # flow_grpo.training.stopping.StopRequest: checked between batches, None for never

    def collect(self, epoch: int, stochastic: bool = True, store_means: bool = False) -> Rollout:
        """Sample ``num_batches_per_epoch`` batches on this process; their rollouts joined, rewards included.

        Random draws are seeded by (seed, epoch, batch, process, sample), so a resumed run repeats them exactly;
        with ``same_latent`` the initial noise is seeded by the prompt instead of the process, so a group spread
        over several processes still starts from one noise. ``stochastic``: the SDE with every stochastic step
        stored (the GRPO family), else the ODE keeping only the clean latents (the forward-process objectives).
        ``store_means``: also keep each stored step's Gaussian mean.
        """
        config, accelerator = self.config, self.accelerator
        started, pending = time.time(), []
        show = config.progress and accelerator.is_main_process
        for b in tqdm(range(config.sample.num_batches_per_epoch), desc=f"epoch {epoch}: sampling", disable=not show, leave=False):
            self._check_stop(RUNNING)
            prompt_ids = self.sampler.next_indices()
            rollout = self._sample(epoch, b, prompt_ids, stochastic, store_means)
            # the reward of this batch runs while the next batch is sampled
            pending.append((rollout, self.executor.submit(self.reward_fn, rollout.images, rollout.prompts, rollout.metadata)))
        sample_time = time.time() - started

        waited = time.time()
        parts = []
        for b, (rollout, future) in enumerate(tqdm(pending, desc=f"epoch {epoch}: rewards", disable=not show, leave=False)):
            error = None
            with self.timer("reward_wait"):
                try:
                    rollout.rewards, info = future.result(timeout=config.reward_deadline_s or None)
                except FutureTimeout:
                    error = RewardError(f"{reward_name(self.reward_fn)} gave no answer for batch {b + 1} of {len(pending)} of "
                                        f"epoch {epoch + 1} within config.reward_deadline_s = {config.reward_deadline_s:g} s")
                except RewardError as reward_error:
                    error = reward_error
            self._check_stop(REWARD_FAILED if error else RUNNING, error)
            rollout.reward_info = numeric_info(info, len(rollout))
            parts.append(rollout)
        common = set.intersection(*(set(part.reward_info) for part in parts))
        for part in parts:
            part.reward_info = {key: part.reward_info[key] for key in sorted(common)}
        joined = concatenate(parts)
        joined.timing = {"sample_time_s": sample_time, "reward_wait_s": time.time() - waited}
        return joined

    def _check_stop(self, status: int, error: Exception | None = None) -> None:
        """Every process together: give the epoch up if any asked to stop or had a reward fail."""
        agreed = agree(self.accelerator, max(status, self.stop.local_status() if self.stop is not None else RUNNING))
        if agreed != RUNNING:
            raise EpochAbandoned(agreed, error)

    def _sample(self, epoch: int, b: int, prompt_ids: list[int], stochastic: bool, store_means: bool) -> Rollout:
        config, rank, device = self.config, self.accelerator.process_index, self.accelerator.device
        prompts = [self.dataset.prompts[i] for i in prompt_ids]
        n = len(prompts)
        height, width = frame_size(config)
        shape = (n, *self.backbone.latent_shape(height, width, config.num_frames))
        if config.sample.same_latent:
            latent_generators = [generator_for(config.seed, "latent", epoch, b, prompt_id) for prompt_id in prompt_ids]
        else:
            latent_generators = [generator_for(config.seed, "latent", epoch, b, rank, i) for i in range(n)]
        spec = SamplingSpec(
            num_steps=config.sample.num_steps, guidance_scale=config.sample.guidance_scale,
            height=height, width=width, num_frames=config.num_frames,
            noise_level=config.sample.noise_level if stochastic else 0.0, sde_type=config.sample.sde_type,
            sde_window_size=config.sample.sde_window_size if stochastic else 0,
            sde_window_range=tuple(config.sample.sde_window_range), sde_window_start=scheduled_window_start(config.sample, epoch),
            ode_solver=config.sample.ode_solver, store_means=store_means, store_latents=stochastic,
            batched_cfg=config.batched_cfg, decode=False,
        )
        noise = SampleNoise(latents=initial_latents(shape, latent_generators, device),
                            steps=[generator_for(config.seed, "noise", epoch, b, rank, i) for i in range(n)],
                            window=generator_for(config.seed, "window", epoch, b, rank))
        input_images = self.dataset.input_images(prompt_ids, (height, width))  # an editing dataset's, else None
        with self.timer("prompt_encoding"):
            conditioning = self.backbone.condition(prompts, config.max_sequence_length, device,
                                                   None if input_images is None else input_images.to(device))
        with self.accelerator.autocast(), self.timer("sampling"):
            trajectory = sample(self.backbone, conditioning, self.negative, spec, noise, transformer=self.transformer)
        with self.accelerator.autocast(), self.timer("vae_decode"):
            images = self.backbone.decode(trajectory.final_latents, config.sample.decode_batch_size or None).cpu()
        return Rollout(
            prompts=prompts, metadata=[self.dataset.metadata[i] for i in prompt_ids],
            group_ids=torch.tensor([self.dataset.group_ids[i] for i in prompt_ids]), conditioning=conditioning,
            final_latents=trajectory.final_latents, rewards={}, latents=trajectory.latents,
            log_probs=trajectory.log_probs if stochastic else None,
            sigmas=trajectory.sigmas.expand(n, -1), sigmas_next=trajectory.sigmas_next.expand(n, -1),
            prev_sample_means=trajectory.prev_sample_means, images=images,
        )
