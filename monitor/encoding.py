"""The encoding policy: observations + open incidents -> encoder decisions. Pure logic.

Per rendition (configured per ladder in `encoding.policies`, keys `stream/rendition`,
`stream/*` or `*/rendition`, fields merged over `encoding.defaults`):

- raise the bitrate by `step` (up to `max_bitrate`) when the MOS stays below target for
  `below_segments` segments (with a blur incident open on the rendition, the raise is
  made for it, so the gain check below undoes it if the bits bought nothing: a picture
  blurred before the encoder), or a starvation incident is open on this rendition, or a
  freeze incident on this rendition alone while its encoder declares a bitrate under
  `starved_ratio` of the decided one (starved of bits, an encoder repeats its last
  picture: the judge sees a freeze, the remedy is bits); at the cap, switch to the next
  slower `presets` entry instead;
- enable `denoise` / `deblock` when a noise / blocking incident is open (any
  localisation: a noisy source is exactly what an encoder-side denoiser is for), or the
  incident's diagnosis names noise / compression;
- drop a rung whose ladder_inversion incident is open (no better than the rung below)
  and that is not starved (a starved rung gets bits first) when `allow_drop_rung`;
- lower the bitrate by `step` (down to `min_bitrate`) when the MOS stays well above
  target with nothing open (bits saved): over the last `above_segments` segments since
  the rung's last decision, the median at or above target + `lower_margin` and none
  below target. (A median, not every segment: content whose scenes alternate swings
  wider than the band, and "every segment in the band" never comes for it);
  with `save_presets` N > 0, the first N such moves switch the rung to the next slower
  `presets` entry instead (more encoder CPU, more quality per bit), so the bitrate steps
  that follow start from a picture with headroom. The operator grants that CPU; the
  floor (`min_bitrate`) stays theirs to set. ("The first N": while the rung's preset is
  one of the first N entries of `presets`; a rung whose preset is not in the list takes
  none, nor one at its bitrate floor, where no step could follow.) Such a preset is on
  trial until a bitrate step follows it or `PRESET_TRIAL` counted segments pass: if the
  rung falls below target in that time, or a starvation or freeze incident opens on it
  alone (a slower preset may be more than the encoder's CPU can run live), the preset is
  undone (not paid for in bits) and the rung takes no more saving presets. Both facts
  ride in every decision's evidence, so a restart or a partition moving keeps them;

The target is `target_mos` (`target: fixed`), or with `target: baseline` the rung's own
quality less `baseline_drop`: the median MOS of its first `baseline_segments` segments in
a row at unchanged settings (the nominal ones, unless a decision came first) with no
incident open on the rung. A no-reference score's absolute level depends on the content
(a soft photograph scores low when pristine, a graphic high), so one fixed target raises
some rungs for ever and lowers others too far; "keep what the ladder delivers today,
give up at most this much" holds on any content. Until the baseline is known, only
incidents lead to decisions.

Raises for an incident are checked: the MOS of the segments after a raise (once at
least `VERIFY_SEGMENTS` of them are in) must stand `min_gain` above the MOS before it,
or the bits bought nothing. Then that raise is undone (back to the bitrate before it)
and no more bits are spent on that incident while it stays open: a fault the judge pins
on the rung that bits do not fix (a score that reads a small rung low whatever its
bitrate, an encoder bug) must not walk the rung to its cap. Checks live in memory; after
a restart an open incident may get one more raise, then is checked again. If quality
then falls `NEW_DROP` below the level the futile raise left (a new fault inside the same
open incident, such as a real starvation later), bits are allowed again.

Nothing is decided for faults localised to the source or packaging other than
filters: more bits do not repair a bad contribution feed or a broken packager.
Hysteresis: raise below target, lower only well above it, counters restart after
each decision. Cooldown: at most one decision per rendition per `cooldown_s`.
Dry run: decisions are made, published and counted, but the policy's view of the
settings does not change (nor does an encoder's: `apply_decision` ignores them).

State after a restart: `EncodingPolicy.restore(decisions)` from the compacted
vqmon.encoder-decisions topic (keyed per rendition: the latest holds the full settings).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from statistics import median
from typing import Literal, Protocol

from pydantic import Field, field_validator, model_validator

from ingest.config import StrictModel
from monitor.encoder_settings import apply_decision
from monitor.types import (
    PRESET_NAME,
    STREAM_SCOPE,
    Action,
    DecisionParams,
    EncoderDecision,
    EncoderSettings,
    FilterName,
    Incident,
    Observation,
    finite_number,
)

DIAGNOSIS_FILTERS: dict[str, FilterName] = {"noise": "denoise", "compression": "deblock"}
INCIDENT_FILTERS: dict[str, FilterName] = {"noise": "denoise", "blocking": "deblock"}
UNMENDED_BY_BITS = ("blur",)
"""Incident kinds on a rung that bits may not mend: a rung below target while one is open
there is raised for that incident, on trial (min_gain): a picture blurred before the
encoder gains nothing and the raise is undone, a starved encoder that smears gains and
keeps it. (Noise and banding are not here: more bits do lessen what an encoder makes of
them, and a noise incident gets its denoise filter.)"""


class RenditionPolicy(StrictModel):
    """How one rendition's encoder may be steered."""

    target: Literal["fixed", "baseline"] = Field(
        "fixed",
        description="'fixed': hold target_mos. 'baseline': hold the rung's own learned MOS "
        "less baseline_drop (see the module doc).",
    )
    target_mos: float = Field(
        3.8, ge=1, le=5, description="MOS (1-5) the rendition should hold (target: fixed)."
    )
    baseline_drop: float = Field(
        0.2,
        ge=0,
        le=4,
        description="target: baseline: the MOS the rung may lose from its baseline.",
    )
    baseline_segments: int = Field(
        10,
        ge=1,
        le=1000,
        description="target: baseline: segments in a row at unchanged settings, with no "
        "incident open on the rung, whose median MOS is the baseline.",
    )
    bitrate: int | None = Field(
        None,
        gt=0,
        description="Nominal ladder bitrate (bit/s): the reference for bits saved; when unset, "
        "the first bitrate a verdict declares.",
    )
    min_bitrate: int = Field(
        100_000, gt=0, description="Never lower the bitrate below this (bit/s)."
    )
    max_bitrate: int | None = Field(
        None, gt=0, description="Never raise above this (bit/s); unset: 2x the nominal bitrate."
    )
    step: float = Field(
        0.2, gt=0, le=1, description="Bitrate change per decision, as a fraction of the current."
    )
    min_gain: float = Field(
        0.1,
        ge=0,
        le=4,
        description="MOS a raise made for an incident must buy (median after it against "
        "before it); less and the raise is undone and that incident gets no more bits. "
        "0: never check.",
    )
    starved_ratio: float = Field(
        0.5,
        ge=0,
        le=1,
        description="A freeze on this rendition alone while its segments declare a bitrate "
        "below this share of the decided one is treated as starvation (bits are raised). "
        "0: never.",
    )
    below_segments: int = Field(
        3, ge=1, description="Segments in a row below target before the bitrate is raised."
    )
    lower_margin: float = Field(
        0.4,
        ge=0,
        le=4,
        description="The bitrate is lowered only at or above target + this (hysteresis band).",
    )
    above_segments: int = Field(
        30,
        ge=1,
        le=1000,
        description="Segments since the last decision, their median at or above target + "
        "lower_margin and none below target, before the bitrate is lowered (kept in memory "
        "per rung: at most 1000; to never lower, set min_bitrate to the nominal bitrate).",
    )
    presets: list[str] = Field(
        default_factory=lambda: ["veryfast", "faster", "fast", "medium", "slow"],
        description="Presets from fastest to slowest; at the bitrate cap the next slower one "
        "is used, and save_presets moves along it. Empty: never change the preset.",
    )

    @field_validator("presets")
    @classmethod
    def _preset_names(cls, names: list[str]) -> list[str]:
        bad = [n for n in names if not PRESET_NAME.fullmatch(n)]
        if bad:
            raise ValueError(
                f"{bad} are not preset names (one word of letters, digits, '.', '_', '-', at "
                "most 32, as the encoder names them: veryfast, p4, 8); decisions naming them "
                "would be refused by every reader"
            )
        return names

    save_presets: int = Field(
        0,
        ge=0,
        le=10,
        description="To save bits, a rung with quality to spare whose preset is one of the "
        "first save_presets entries of `presets` first takes the next one (a slower preset: "
        "more encoder CPU, better quality per bit), then its bitrate is lowered; undone if "
        "the rung falls soon after. 0: bits are saved by the bitrate alone.",
    )
    filters: bool = Field(True, description="Allow enable_filter decisions (denoise, deblock).")
    allow_drop_rung: bool = Field(
        False, description="Allow drop_rung decisions for a rung no better than the one below."
    )

    @model_validator(mode="after")
    def _check(self) -> RenditionPolicy:
        if self.max_bitrate is not None and self.max_bitrate < self.min_bitrate:
            raise ValueError(
                f"max_bitrate={self.max_bitrate} is below min_bitrate={self.min_bitrate}; "
                "raise max_bitrate or lower min_bitrate"
            )
        return self


class EncodingConfig(StrictModel):
    """monitor.encoding: turn incidents and scores into encoder decisions."""

    enabled: bool = Field(False, description="Make encoder decisions at all.")
    dry_run: bool = Field(
        True,
        description="Publish decisions marked dry_run (encoders ignore them) instead of "
        "real ones: watch what it would do first. The settings do not move, so a dry run "
        "repeats its first step each cooldown (a raise, a lower, a saving preset).",
    )
    cooldown_s: float = Field(
        60.0, ge=0, description="Least time between two decisions for one rendition (seconds)."
    )
    defaults: RenditionPolicy = Field(default_factory=RenditionPolicy)
    policies: dict[str, RenditionPolicy] = Field(
        default_factory=dict,
        description="Overrides per 'stream/rendition', 'stream/*' or '*/rendition' (most "
        "specific wins); only the fields given replace the defaults.",
    )

    @model_validator(mode="after")
    def _check(self) -> EncodingConfig:
        for key in self.policies:
            stream, sep, rendition = key.partition("/")
            if not sep or not stream or not rendition or "/" in rendition:
                raise ValueError(
                    f"policies key {key!r} must be 'stream/rendition', 'stream/*' or '*/rendition'"
                )
        return self

    def policy(self, stream: str, rendition: str) -> RenditionPolicy:
        merged = self.defaults.model_dump()
        for key in (f"*/{rendition}", f"{stream}/*", f"{stream}/{rendition}"):
            p = self.policies.get(key)
            if p is not None:
                merged.update(p.model_dump(include=p.model_fields_set))
        return RenditionPolicy.model_validate(merged)


class EncodingHooks(Protocol):
    """Optional observer (monitor.metrics.Metrics implements it)."""

    def on_decision(self, decision: EncoderDecision) -> None: ...

    def on_bytes_saved(self, stream: str, rendition: str, saved_bytes: float) -> None: ...


VERIFY_SEGMENTS = 3
"""Counted segments after a raise before its effect is judged."""
SINCE_KEPT = 30
"""Counted segments the raise checks look at (a rung keeps max(this, above_segments) for the
"quality to spare" window)."""
PRESET_TRIAL = 30
"""Counted segments after a preset taken to save bits during which a fall is blamed on it
(unless a bitrate step comes first)."""
NEW_DROP = 0.5
"""MOS below the level at which bits did not help that makes an open incident eligible for
bits again (the judge's default starvation margin)."""


@dataclass(slots=True)
class Rung:
    policy: RenditionPolicy
    settings: EncoderSettings
    nominal: int | None
    below: int = 0
    above: int = 0
    last_decision_at: float | None = None
    learning: list[float] = field(default_factory=list)
    """MOS of the segments since the settings last changed, until the baseline is known."""
    learning_at: EncoderSettings | None = None
    """The settings `learning` was measured at."""
    baseline: float | None = None
    declared: int | None = None
    """The bitrate the rung's last segment declared (its encoder's own word), if any."""
    since: deque[tuple[int, float]] = field(init=False)
    """(seq, MOS) of the last counted segments since the rung's last decision (bounded: a
    rung may go days without one; sized for the policy's "quality to spare" window)."""
    trial: Trial | None = None
    """The last raise made for an open incident, being checked."""
    futile: dict[str, float] = field(default_factory=dict)
    """Open incidents that a raise did not help -> the median MOS after that raise: no
    more bits for them unless quality falls well below that level (a new fault)."""
    saving_from: str | None = None
    """The preset before a slower one taken to save bits, while that one is on trial (until
    a bitrate step follows it or PRESET_TRIAL counted segments pass): a fall in that time is
    undone by going back to it."""
    trial_segments: int = 0
    """Counted segments since the preset on trial was taken."""
    saving_failed: bool = False
    """A slower preset taken to save bits was undone: no more of them on this rung."""

    def __post_init__(self) -> None:
        self.since = deque(maxlen=max(SINCE_KEPT, self.policy.above_segments))

    def target(self) -> float | None:
        """The MOS to hold; None while a baseline target's baseline is being learned."""
        p = self.policy
        if p.target == "fixed":
            return p.target_mos
        return None if self.baseline is None else max(1.0, self.baseline - p.baseline_drop)


@dataclass(frozen=True, slots=True)
class Trial:
    """A raise made for an incident: the bitrate and the median MOS before it."""

    incident: str
    from_bitrate: int
    before: float


@dataclass(frozen=True, slots=True)
class Proposal:
    action: Action
    params: DecisionParams
    reason: str
    incident: Incident | None = None
    saving: bool = False
    """A slower preset taken to save bits (checked: undone if the rung then falls)."""


class EncodingPolicy:
    """Stateful wrapper: counters, cooldowns and believed settings per rendition."""

    def __init__(self, cfg: EncodingConfig, hooks: EncodingHooks | None = None) -> None:
        self.cfg = cfg
        self.hooks = hooks
        self.rungs: dict[tuple[str, str], Rung] = {}

    def observe(
        self, obs: Observation, incidents: Sequence[Incident], now: float
    ) -> list[EncoderDecision]:
        """One verdict and the stream's open incidents -> at most one decision."""
        if not self.cfg.enabled:
            return []
        rung = self._rung(obs)
        if not rung.settings.enabled:
            return []
        mine = [i for i in incidents if i.is_open and _concerns(i, obs.stream, obs.rendition)]
        self._count(rung, obs, incident_open=bool(mine))
        self._bytes_saved(rung, obs)
        cool = (
            rung.last_decision_at is not None and now - rung.last_decision_at < self.cfg.cooldown_s
        )
        if cool:
            return []
        checked = _check_raises(rung, mine)
        if checked == "wait":
            return []
        proposal = checked if checked is not None else propose(rung, mine)
        if proposal is None:
            return []
        return [self._decide(rung, obs, proposal, now)]

    def restore(self, decisions: Iterable[EncoderDecision]) -> None:
        """Rebuild settings and cooldowns from the decisions topic (latest per rendition)."""
        for d in decisions:
            rung = self.rungs.get((d.stream, d.rendition))
            if rung is None:
                policy = self.cfg.policy(d.stream, d.rendition)
                start = d.params.from_bitrate if d.action.endswith("_bitrate") else None
                rung = Rung(policy, EncoderSettings(), policy.bitrate or start)
                self.rungs[(d.stream, d.rendition)] = rung
            if not d.dry_run:
                rung.settings = d.settings
            evidence = d.evidence or {}
            baseline = finite_number(evidence.get("baseline_mos"))
            if baseline is not None:  # kept, not learned again at other settings
                rung.baseline = baseline
            if not d.dry_run:  # a preset on trial stays on trial; a failed one is not retried
                pending = evidence.get("saving_preset_from")
                # only a preset of the policy's own list: a stray record must not name one
                rung.saving_from = pending if pending in rung.policy.presets else None
                rung.saving_failed = evidence.get("saving_presets_failed") is True
                rung.trial_segments = 0
            rung.last_decision_at = max(rung.last_decision_at or d.made_at, d.made_at)

    def settings(self, stream: str, rendition: str) -> EncoderSettings | None:
        rung = self.rungs.get((stream, rendition))
        return None if rung is None else rung.settings

    def _rung(self, obs: Observation) -> Rung:
        key = (obs.stream, obs.rendition)
        rung = self.rungs.get(key)
        if rung is None:
            policy = self.cfg.policy(*key)
            nominal = policy.bitrate or obs.bitrate  # a verdict's bitrate is > 0 or None
            preset = policy.presets[0] if policy.presets else None
            settings = EncoderSettings(bitrate=nominal, preset=preset)
            rung = Rung(policy, settings, nominal)
            self.rungs[key] = rung
        if rung.settings.bitrate is None and obs.bitrate:
            rung.settings = replace(rung.settings, bitrate=obs.bitrate)
            rung.nominal = rung.nominal or obs.bitrate
        rung.declared = obs.declared_bitrate
        return rung

    def _count(self, rung: Rung, obs: Observation, incident_open: bool = False) -> None:
        """Hysteresis counters; segments that say nothing about bits leave them alone."""
        explained = obs.transport_errors or any(f.kind in ("black", "freeze") for f in obs.flags)
        if obs.mos is None or explained:
            return
        p = rung.policy
        if p.target == "baseline" and rung.baseline is None:
            self._learn(rung, obs.mos, incident_open)
        rung.since.append((obs.seq, obs.mos))
        if rung.saving_from is not None:
            rung.trial_segments += 1
            if rung.trial_segments > PRESET_TRIAL:  # it held: the preset stays
                rung.saving_from = None
        target = rung.target()
        if target is None:
            return
        rung.below = rung.below + 1 if obs.mos < target else 0
        rung.above = rung.above + 1 if obs.mos >= target + p.lower_margin else 0

    @staticmethod
    def _learn(rung: Rung, mos: float, incident_open: bool) -> None:
        """The baseline: the median MOS of `baseline_segments` segments in a row at the
        same settings (normally the nominal ones, the first the rung sees; after a
        decision made while learning, or a restart that kept no baseline, the current
        ones) with no incident open on the rung. Anything else starts the count again."""
        if incident_open or rung.learning_at != rung.settings:
            rung.learning, rung.learning_at = [], rung.settings
            if incident_open:
                return
        rung.learning.append(mos)
        if len(rung.learning) >= rung.policy.baseline_segments:
            rung.baseline = median(rung.learning)
            rung.learning, rung.learning_at = [], None
            rung.since.clear()  # "well above target" is judged from this segment on

    def _bytes_saved(self, rung: Rung, obs: Observation) -> None:
        bitrate = rung.settings.bitrate
        if self.hooks is None or rung.nominal is None or bitrate is None or not obs.duration_s:
            return
        if bitrate < rung.nominal:
            # An ABR encoder spends a share of its target (x264 on 1-s segments: 56-72% on
            # the loop bench's content) and that share stays when the target moves, so what
            # this segment would have cost at the nominal target is its measured bits scaled
            # up by nominal / target; the target difference alone would count bits never spent.
            # Never more than that difference (an overshoot, or a verdict with a wild value).
            per_s = float(rung.nominal - bitrate)
            if obs.measured_bitrate is not None:
                per_s = min(per_s, obs.measured_bitrate * (rung.nominal / bitrate - 1))
            self.hooks.on_bytes_saved(obs.stream, obs.rendition, per_s * obs.duration_s / 8)

    def _decide(self, rung: Rung, obs: Observation, p: Proposal, now: float) -> EncoderDecision:
        dry = self.cfg.dry_run
        # the saving preset on trial after this decision, and whether one has failed
        saving_from, saving_failed = rung.saving_from, rung.saving_failed
        if p.action == "set_preset":
            undo = saving_from is not None and p.params.to_preset == saving_from
            saving_failed = saving_failed or undo
            saving_from = p.params.from_preset if p.saving else None
        elif p.action.endswith("_bitrate"):
            saving_from = None
        draft = EncoderDecision(
            id=f"{obs.stream}/{obs.rendition}/{p.action}/{obs.seq}",
            stream=obs.stream,
            rendition=obs.rendition,
            action=p.action,
            params=p.params,
            settings=rung.settings,
            dry_run=False,
            made_at=now,
            seq=obs.seq,
            reason=p.reason,
            incident_id=None if p.incident is None else p.incident.id,
            evidence={
                "segment_id": obs.segment_id,
                "mos": obs.mos,
                "mos_low": obs.mos_low,
                "target_mos": rung.target(),
                "baseline_mos": rung.baseline,
                "segments_below_target": rung.below,
                "segments_above_target": rung.above,
                "incident_kind": None if p.incident is None else p.incident.kind,
                "localisation": None if p.incident is None else p.incident.localisation,
                "saving_preset_from": saving_from,
                "saving_presets_failed": saving_failed,
            },
        )
        after = apply_decision(rung.settings, draft)
        decision = replace(draft, settings=after, dry_run=dry)
        if not dry:
            rung.settings = after
        inc, before = p.incident, p.params.from_bitrate
        # a dry-run raise changes no encoder: there is no effect to check
        checked = p.action == "raise_bitrate" and rung.policy.min_gain > 0 and not dry
        if checked and inc is not None and before and rung.since:
            # the MOS while the incident was open, at the bitrate before this raise
            recent = list(rung.since)[-SINCE_KEPT:]
            bad = [m for seq, m in recent if seq >= inc.opened_seq] or [recent[-1][1]]
            rung.trial = Trial(inc.id, before, median(bad))
        if not dry:
            rung.saving_from, rung.saving_failed = saving_from, saving_failed
            rung.trial_segments = 0
        rung.last_decision_at = now
        rung.since.clear()
        rung.below = rung.above = 0
        if self.hooks is not None:
            self.hooks.on_decision(decision)
        return decision


def propose(rung: Rung, incidents: Sequence[Incident]) -> Proposal | None:
    """The one change this rung needs now, most urgent first; None when it is fine."""
    p = rung.policy
    if any(i.id in rung.futile for i in incidents):
        return _filter_proposal(rung, incidents)  # bits did not help: filters, nothing else
    by_kind = {i.kind: i for i in incidents}
    starved = by_kind.get("starvation")
    own_starved = starved if starved is not None and starved.localisation == "rendition" else None
    why = "starvation incident"
    frozen = by_kind.get("freeze")
    if own_starved is None and frozen is not None and frozen.localisation == "rendition":
        short = _short_of_bits(rung)
        if short is not None:
            own_starved, why = frozen, short
    upstream = any(i.localisation != "rendition" for i in incidents)
    blurred = next((i for i in incidents if i.kind in UNMENDED_BY_BITS), None)
    fell = rung.below >= p.below_segments and not upstream
    if rung.saving_from is not None:
        undo = _undo_saving_preset(rung, fell, starved, frozen)
        if undo is not None:
            return undo
    if own_starved is not None or fell:
        why = why if own_starved else f"{rung.below} segments below target"
        # Below target with a blur incident open: a blurred picture or a starved encoder
        # that smears. The raise is made for the incident, so the gain check undoes it
        # and gives that incident no more bits if they bought nothing.
        more = _raise(rung, why, own_starved or blurred)
        if more is not None:
            return more
    flt = _filter_proposal(rung, incidents)
    if flt is not None:
        return flt
    inversion = by_kind.get("ladder_inversion")
    if p.allow_drop_rung and inversion is not None and own_starved is None:
        return Proposal("drop_rung", DecisionParams(), "no better than the rung below", inversion)
    well_above = _well_above(rung)
    if well_above is not None and not incidents:
        return _slower_to_save(rung, well_above) or _lower(rung, well_above)
    return None


def _undo_saving_preset(
    rung: Rung, fell: bool, starved: Incident | None, frozen: Incident | None
) -> Proposal | None:
    """Back to the preset before the one on trial, when the rung fell below target or a
    starvation or freeze incident opened on it alone while that preset was on trial (it
    may be more than the encoder's CPU runs live): undone, not paid for in bits."""
    here = [i for i in (starved, frozen) if i is not None and i.localisation == "rendition"]
    if not fell and not here:
        return None
    s, back = rung.settings, rung.saving_from
    what = f"a {here[0].kind} incident" if here else f"{rung.below} segments below target"
    why = f"{what} after a slower preset taken to save bits: back to {back}"
    inc = here[0] if here else None
    return Proposal("set_preset", DecisionParams(from_preset=s.preset, to_preset=back), why, inc)


def _well_above(rung: Rung) -> str | None:
    """Why the rung has quality to spare (None: it has not): the median MOS of its last
    `above_segments` segments since the last decision is at or above target +
    `lower_margin`, and none of them is below target."""
    p, target = rung.policy, rung.target()
    last = [m for _, m in rung.since][-p.above_segments :]
    if target is None or len(last) < p.above_segments or min(last) < target:
        return None
    level = median(last)
    if level < target + p.lower_margin:
        return None
    return (
        f"median MOS {level:.2f} of the last {len(last)} segments at or above target "
        f"({target:.2f}) + {p.lower_margin}, none below target"
    )


def _check_raises(rung: Rung, incidents: Sequence[Incident]) -> Proposal | Literal["wait"] | None:
    """The check of the last raise made for an open incident: "wait" until enough segments
    after it are in, an undo when it bought less than `min_gain`, else None (go on: the
    policy proposes as usual)."""
    open_ids = {i.id for i in incidents}
    if rung.futile:
        # An incident that resolved no longer holds bits back, nor one whose quality fell
        # well below the level at which bits did not help: that is a new fault inside it.
        last = [m for _, m in rung.since][-VERIFY_SEGMENTS:]
        fresh = median(last) if len(last) == VERIFY_SEGMENTS else math.inf
        rung.futile = {
            i: level
            for i, level in rung.futile.items()
            if i in open_ids and fresh >= level - NEW_DROP
        }
    trial = rung.trial
    if trial is None:
        return None
    if trial.incident not in open_ids:
        rung.trial = None
        return None
    if len(rung.since) < VERIFY_SEGMENTS:
        return "wait"
    after = median(m for _, m in list(rung.since)[-SINCE_KEPT:])
    gain = after - trial.before
    if gain >= rung.policy.min_gain:
        return None
    rung.trial = None
    rung.futile[trial.incident] = after
    incident = next(i for i in incidents if i.id == trial.incident)
    now = rung.settings.bitrate
    if now is None or now <= trial.from_bitrate:
        return None
    params = DecisionParams(from_bitrate=now, to_bitrate=trial.from_bitrate)
    why = (
        f"raising to {now / 1000:.0f} kbit/s bought {gain:+.2f} MOS (< min_gain "
        f"{rung.policy.min_gain}): undone, no more bits for this {incident.kind} incident"
    )
    return Proposal("lower_bitrate", params, why, incident)


def _filter_proposal(rung: Rung, incidents: Sequence[Incident]) -> Proposal | None:
    """A denoise / deblock filter an open incident (or its diagnosis) calls for."""
    if rung.policy.filters:
        for inc in incidents:
            flt = _filter_for(inc)
            if flt is not None and flt not in rung.settings.filters:
                return Proposal(
                    "enable_filter", DecisionParams(filter=flt), f"{inc.kind} incident", inc
                )
    return None


def _short_of_bits(rung: Rung) -> str | None:
    """Why a frozen rung is starved of bits, or None: its encoder declares a bitrate under
    `starved_ratio` of the decided one."""
    decided, declared = rung.settings.bitrate, rung.declared
    if not decided or not declared or declared <= 0:
        return None
    if declared >= rung.policy.starved_ratio * decided:
        return None
    return (
        f"freeze on this rung alone while it declares {declared / 1000:.0f} kbit/s, "
        f"{declared / decided:.0%} of the {decided / 1000:.0f} kbit/s decided"
    )


def _raise(rung: Rung, why: str, incident: Incident | None) -> Proposal | None:
    p, s = rung.policy, rung.settings
    if s.bitrate is not None:
        cap = p.max_bitrate or 2 * (rung.nominal or s.bitrate)
        to = min(cap, _round(s.bitrate * (1 + p.step)))
        if to > s.bitrate:
            params = DecisionParams(from_bitrate=s.bitrate, to_bitrate=to)
            return Proposal("raise_bitrate", params, why, incident)
    if s.preset in p.presets and p.presets.index(s.preset) + 1 < len(p.presets):
        slower = p.presets[p.presets.index(s.preset) + 1]
        params = DecisionParams(from_preset=s.preset, to_preset=slower)
        return Proposal("set_preset", params, f"{why}; bitrate at its cap", incident)
    return None


def _slower_to_save(rung: Rung, why: str) -> Proposal | None:
    """The next slower preset, while the rung's preset is one of the first `save_presets`
    entries of `presets`, no saving preset failed on it, and a bitrate step can follow."""
    p, s = rung.policy, rung.settings
    if s.preset not in p.presets:
        return None
    at = p.presets.index(s.preset)
    if rung.saving_failed or at >= p.save_presets or at + 1 >= len(p.presets):
        return None
    if _lower_to(rung) is None:  # at its floor: a slower preset would buy no bits
        return None
    params = DecisionParams(from_preset=s.preset, to_preset=p.presets[at + 1])
    return Proposal(
        "set_preset", params, f"{why}: a slower preset before lower bitrates", saving=True
    )


def _lower_to(rung: Rung) -> int | None:
    """The bitrate one step down, or None at the floor (or with no bitrate known)."""
    p, now = rung.policy, rung.settings.bitrate
    if now is None:
        return None
    to = max(p.min_bitrate, _round(now * (1 - p.step)))
    return to if to < now else None


def _lower(rung: Rung, why: str) -> Proposal | None:
    to, now = _lower_to(rung), rung.settings.bitrate
    if to is None or now is None:
        return None
    return Proposal("lower_bitrate", DecisionParams(from_bitrate=now, to_bitrate=to), why)


def _filter_for(inc: Incident) -> FilterName | None:
    flt = INCIDENT_FILTERS.get(inc.kind)
    if flt is None and inc.diagnosis:
        flt = DIAGNOSIS_FILTERS.get(str(inc.diagnosis.get("degradation", "")))
    return flt


def _concerns(inc: Incident, stream: str, rendition: str) -> bool:
    if inc.stream != stream:
        return False
    return inc.scope == rendition or (inc.scope == STREAM_SCOPE and rendition in inc.renditions)


def _round(bitrate: float) -> int:
    """Bitrates in whole kbit/s: readable decisions, stable ids across float noise."""
    return int(math.floor(bitrate / 1000 + 0.5) * 1000)
