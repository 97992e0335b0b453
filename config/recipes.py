"""Each objective's recipe, in one place: the keys a config sets to run an objective (``config.train.objective``
and what its sampler and loss need), called by every config file that runs it.

A file of its own and not config/base.py: base.py holds what every run starts from, this file what one objective
changes on it; config/grpo.py, forward.py, flux.py, qwenimage.py, wan.py and the CPU worlds of tiny.py, shapes.py
and toy.py call the same functions, so an objective's settings are read and changed here only (tests/
test_config_cli.py checks that no other config file names an objective).

Two kinds of function, both taking the config and returning it:

- ``<objective>(config, ...)``: the objective's mechanism, with the sizes and coefficients a run chooses as
  arguments (the paper's numbers as defaults where a run can leave them);
- ``<objective>_published(config, ...)``: the settings its paper publishes, with their source, for the runs on
  the hub's models. A published setting that one named config alone uses (GARDO's, DPO's, SFT's, DGPO's runs
  in config/grpo.py and forward.py) stays with that config, its source in its docstring.

No function here is a named config (this file has no ``get_config``).
"""

# ---- sampling: guidance and the stochastic window (Flow-GRPO-Fast, MixGRPO, Qwen-Image's runs) --------------


def cfg_free(config):
    """The CFG-free policy of the forward-process papers and Flow-GRPO's ``*_nocfg`` runs: rollouts and evaluation
    at guidance 1, the conditional velocity trained."""
    config.sample.guidance_scale = 1.0
    config.sample.eval_guidance_scale = 1.0
    config.train.cfg = False
    return config


def sde_window(config, size: int, window_range: tuple):
    """Only a window of ``size`` steps, drawn per batch inside ``window_range``, is stochastic (ODE elsewhere); only
    the window is stored, and every window step is trained."""
    config.sample.sde_window_size = size
    config.sample.sde_window_range = tuple(window_range)
    config.train.timestep_fraction = 1.0
    return config


def fast(config, window_size: int = 3, window_range: tuple | None = None, clip_range: float = 1e-5):
    """Flow-GRPO-Fast (the original flow_grpo's train_sd3_fast.py / train_flux_fast.py): CPS steps at noise 0.8 in
    one window of ``window_size`` steps starting in the first half of the schedule (``window_range``; default
    ``(0, num_steps // 2)``), ODE elsewhere; only the window stored and trained; no KL, CPS's clip range 1e-5."""
    config.sample.sde_type = "cps"
    config.sample.noise_level = 0.8
    sde_window(config, window_size, window_range or (0, config.sample.num_steps // 2))
    config.train.clip_range = clip_range
    config.train.beta = 0.0
    return config


# ---- the score-function objectives on SDE rollouts ----------------------------------------------------------


def grpo_guard(config, clip_range: float = 2e-5):
    """GRPO-Guard: ratio = exp((log p - log p_old + bias) * std), re-centred per step; loss / (-dt). The ratio's
    deviations are the log-prob's times the step std (about 0.1-0.5 at noise 0.7 over 10 steps), so the SDE
    clip range 1e-4 on log-probs becomes about 2e-5 on this ratio (the CPU worlds keep their own)."""
    config.train.objective = "grpo_guard"
    config.train.clip_range = clip_range
    return config


def flowrl(config):
    """FlowRL trajectory balance: log Z head on the pooled prompt embedding, tb_coef 15, clamped importance
    weight, reference = the adapter-disabled model (its log-probs are computed whatever beta is)."""
    config.train.objective = "flowrl"
    return config


def mixgrpo(config, window_size: int, window_range: tuple, shift_every: int, ode_solver: str = "euler"):
    """MixGRPO's sliding window: Flow-GRPO's SDE on a window of ``window_size`` steps that starts at
    ``window_range``'s start and moves one step toward low noise every ``shift_every`` epochs (back to the start
    at its end), every window step trained; ``ode_solver`` after it ("dpm2": MixGRPO-Flash's DPM-Solver++(2M))."""
    config.train.objective = "mixgrpo"
    sde_window(config, window_size, window_range)
    config.sample.sde_window_schedule = "progressive"
    config.sample.sde_window_shift_every = shift_every
    config.sample.sde_window_stride = 1
    config.sample.ode_solver = ode_solver
    return config


def mixgrpo_published(config):
    """MixGRPO's published sampler and loss (Tencent-Hunyuan/MixGRPO, finetune_flux_grpo_MixGRPO.sh): 25 steps,
    Flow-GRPO's SDE at noise 0.7 on a window of 4 that starts at step 0 and moves one step toward low noise
    every 25 epochs within steps 0-23 (then back to 0), Euler elsewhere; every window step trained, clip 1e-4,
    no KL."""
    config.sample.num_steps = 25
    config.sample.sde_type = "sde"
    config.sample.noise_level = 0.7
    mixgrpo(config, window_size=4, window_range=(0, 23), shift_every=25)
    config.train.clip_range = 1e-4
    config.train.beta = 0.0
    return config


def mixgrpo_flash(config):
    """MixGRPO-Flash: DPM-Solver++(2M) after the window (the authors' dpmsolver++ "post", order 2) and the window
    moved every 20 epochs. Their Flash also shortens the schedule after the window (compress ratio 0.4),
    which this sampler does not."""
    config.sample.ode_solver = "dpm2"
    config.sample.sde_window_shift_every = 20
    return config


# ---- the forward-process objectives on ODE rollouts -----------------------------------------------------------


def nft(config, timestep_fraction: float = 0.99):
    """DiffusionNFT's loss on ODE rollouts: ``int(steps x timestep_fraction)`` steps trained per image, drawn at
    random (the paper: 99%)."""
    config.train.objective = "nft"
    config.train.timestep_strategy = "random"
    config.train.timestep_fraction = timestep_fraction
    return config


def nft_published(config, task: str):
    """DiffusionNFT's published settings (NVlabs/DiffusionNFT, config/nft.py), on any family: ODE rollouts with
    99% of the steps trained at random, nft_beta 1 (0.1 for OCR), velocity penalty 1e-4 to the base, advantages
    clipped at 5, the old policy's decay schedule "1" (flat 0, rate 0.001, cap 0.5; OCR: "2", flat for 75 steps,
    then 0.0075 per step up to 0.999), the evaluation EMA with warm-up."""
    nft(config, timestep_fraction=0.99)
    config.train.nft.mix_strength = 0.1 if task == "ocr" else 1.0
    config.train.beta = 1e-4
    config.train.adv_clip_max = 5.0
    config.train.nft.old_policy_decay = (75.0, 0.0075, 0.999) if task == "ocr" else (0.0, 0.001, 0.5)
    config.train.global_std = True
    config.train.ema = True
    config.train.ema_warmup = True
    return config


def awm(config, beta: float, timestep_count: int = 6, timestep_fraction: float = 0.9):
    """Advantage Weighted Matching's loss: ``timestep_count`` stratified flow times among the first
    ``timestep_fraction`` of the steps (the paper: 6 in 90%), clip range 1 (the ratio is 1 with one step per
    epoch), ``beta`` times the velocity penalty to the reference; the generalised-Huber power 0.25 and the
    KL-EMA snapshot are AWM's own defaults (config.train.awm)."""
    config.train.objective = "awm"
    config.train.timestep_strategy = "stratified"
    config.train.timestep_fraction = timestep_fraction
    config.train.timestep_count = timestep_count
    config.train.clip_range = 1.0
    config.train.beta = beta
    return config


def awm_published(config, beta: float, timestep_count: int = 6):
    """Advantage Weighted Matching's published settings (scxue/advantage_weighted_matching, config/dgx_awm.py),
    on any family: ``awm()`` at 90% of the steps, advantages clipped at 1, the evaluation EMA at 0.99 every
    step."""
    awm(config, beta, timestep_count, timestep_fraction=0.9)
    config.train.adv_clip_max = 1.0
    config.train.global_std = True
    config.train.ema_warmup = False
    config.train.ema_decay = 0.99
    config.train.ema_update_interval = 1
    return config


def dpo(config, ref_update_step: int):
    """Online DPO (the original flow_grpo's config/dpo.py): each group's best against its worst image, DPO beta
    100 on the flow-matching errors at logit-normal times shifted by 3, the sampling reference replaced by the
    policy every ``ref_update_step`` optimizer steps ("change ref_update_step to a small number, e.g. 40, to
    switch to online")."""
    config.train.objective = "dpo"
    config.train.dpo.temperature = 100.0
    config.train.dpo.time_shift = 3.0
    config.train.dpo.ref_update_step = ref_update_step
    return config


def sft(config, ref_update_step: int, beta: float):
    """Reward-filtered SFT (the original flow_grpo's config/sft.py): flow matching on each group's best image at
    logit-normal times shifted by 3, ``beta`` times the velocity penalty to the reference, the sampler replaced by
    the policy every ``ref_update_step`` optimizer steps."""
    config.train.objective = "sft"
    config.train.sft.time_shift = 3.0
    config.train.sft.ref_update_step = ref_update_step
    config.train.beta = beta
    return config


def dgpo(config, timestep_fraction: float = 0.4, beta: float = 0.02, ode_solver: str = "dpm2"):
    """DGPO's group sigmoid over the advantage-weighted error gains against the base (Luo-Yihong/DGPO): the
    high-noise ``timestep_fraction`` of the steps trained (the authors' GenEval: 4 of the first 5 of 10 at random,
    here the first 4), ``beta`` times the velocity penalty to the base (0.02), rollouts by ``ode_solver``
    (DPM-Solver++(2M)); dgpo_beta 100 and the trust region 1e-2 are DGPO's defaults (config.train.dgpo)."""
    config.train.objective = "dgpo"
    config.train.timestep_fraction = timestep_fraction
    config.train.timestep_strategy = "first"
    config.train.beta = beta
    config.sample.ode_solver = ode_solver
    return config


# ---- GARDO on Flow-GRPO or DiffusionNFT -----------------------------------------------------------------------

GARDO_JUDGES = ("aesthetic", "imagereward")  # the authors' (tinnerhrhe/GARDO, config/gardo.py)


def gardo(config, objective: str, beta: float, judges: tuple = ()):
    """GARDO (tinnerhrhe/GARDO) on Flow-GRPO (``objective`` "grpo_gardo") or DiffusionNFT ("nft_gardo"): the KL
    (NFT: the velocity penalty) at ``beta`` only on the samples the ``judges`` rate above the main reward (added
    to ``config.reward_fn`` at weight 0: the advantages use the main reward alone, as the authors' code), the
    reference reset on a large KL or every 15 epochs, diversity-aware advantages (config.train.gardo)."""
    assert objective in ("grpo_gardo", "nft_gardo"), objective
    config.train.objective = objective
    config.train.beta = beta
    if judges:  # (the toy worlds have one reward and no reward_fn: every sample is gated)
        config.reward_fn = {**config.reward_fn, **{judge: 0.0 for judge in judges}}
    config.train.gardo.aux_rewards = tuple(judges)
    return config
