"""Synthetic Scheme Sahayak data: artisans' applications to government schemes and their outcomes.

Labels are drawn from a known true approval probability, so the Bayes-optimal accuracy is exact."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from sahayak_rpc.schema import FeatureSpec, FeatureType, FeatureValue, LabelSpec, Row, Schema

__all__ = [
    "DEMO_MODEL_NAME",
    "DEMO_SCHEMA",
    "SCHEMES",
    "DemoExample",
    "DemoScheme",
    "approval_probability",
    "bayes_optimal_accuracy",
    "expected_bayes_accuracy",
    "generate_artisan",
    "generate_outcomes",
]

DEMO_MODEL_NAME = "scheme-sahayak"

_CRAFTS: tuple[str, ...] = (
    "weaver",
    "potter",
    "carpenter",
    "blacksmith",
    "embroiderer",
    "metalworker",
    "bamboo_craft",
    "leather_craft",
    "stone_carver",
    "jewellery",
)
_STATES: tuple[str, ...] = (
    "uttar_pradesh",
    "rajasthan",
    "gujarat",
    "west_bengal",
    "odisha",
    "bihar",
    "assam",
    "tamil_nadu",
    "karnataka",
    "jammu_and_kashmir",
)
_GENDERS: tuple[str, ...] = ("female", "male", "other")
_SOCIAL_CATEGORIES: tuple[str, ...] = ("general", "obc", "sc", "st")
_EDUCATION_LEVELS: tuple[str, ...] = ("none", "primary", "secondary", "higher_secondary", "graduate")
_SCHEME_TYPES: tuple[str, ...] = ("loan", "subsidy", "training", "pension", "insurance")
_TARGET_CRAFTS: tuple[str, ...] = ("any", *_CRAFTS)


def _numeric(
    name: str, description: str, group: str, *, required: bool = True, lo: float | None = None, hi: float | None = None
) -> FeatureSpec:
    """A numeric feature spec."""
    return FeatureSpec(
        name, FeatureType.NUMERIC, required=required, description=description, min=lo, max=hi, group=group
    )


def _categorical(
    name: str, description: str, group: str, categories: tuple[str, ...], *, required: bool = True
) -> FeatureSpec:
    """A categorical feature spec with a closed category list."""
    return FeatureSpec(
        name, FeatureType.CATEGORICAL, required=required, description=description, categories=categories, group=group
    )


def _boolean(name: str, description: str, group: str) -> FeatureSpec:
    """A required boolean feature spec."""
    return FeatureSpec(name, FeatureType.BOOLEAN, required=True, description=description, group=group)


DEMO_SCHEMA = Schema(
    features=(
        _numeric("age", "Applicant's age in years.", "artisan", lo=18.0, hi=90.0),
        _numeric(
            "annual_income_inr", "Declared household income per year, in rupees.", "artisan", required=False, lo=0.0
        ),
        _numeric("years_experience", "Years practising the craft.", "artisan", lo=0.0, hi=70.0),
        _categorical("craft", "The artisan's main craft.", "artisan", _CRAFTS),
        _categorical("state", "State of residence.", "artisan", _STATES),
        _categorical("gender", "Gender as recorded on the application.", "artisan", _GENDERS),
        _categorical("social_category", "Social category (General, OBC, SC, ST).", "artisan", _SOCIAL_CATEGORIES),
        _categorical("education", "Highest education completed.", "artisan", _EDUCATION_LEVELS, required=False),
        _boolean("has_bank_account", "Holds a bank account that can receive transfers.", "artisan"),
        _boolean("has_artisan_card", "Holds a Pehchan artisan identity card.", "artisan"),
        _numeric(
            "documents_complete_share", "Share of the required documents submitted (0-1).", "artisan", lo=0.0, hi=1.0
        ),
        _numeric("prior_applications", "Earlier scheme applications by this artisan.", "artisan", lo=0.0, hi=100.0),
        _numeric("prior_approvals", "How many of the earlier applications were approved.", "artisan", lo=0.0, hi=100.0),
        _numeric(
            "distance_to_office_km",
            "Distance to the nearest scheme office, in km.",
            "artisan",
            required=False,
            lo=0.0,
            hi=1000.0,
        ),
        _categorical("scheme_type", "Kind of benefit the scheme gives.", "scheme", _SCHEME_TYPES),
        _numeric("scheme_max_benefit_inr", "Largest benefit the scheme pays, in rupees.", "scheme", lo=0.0),
        _numeric("scheme_min_age", "Youngest eligible age.", "scheme", lo=0.0, hi=120.0),
        _numeric("scheme_max_age", "Oldest eligible age.", "scheme", lo=0.0, hi=120.0),
        _numeric(
            "scheme_income_ceiling_inr",
            "Income limit for eligibility; absent when none.",
            "scheme",
            required=False,
            lo=0.0,
        ),
        _categorical("scheme_targets_craft", "Craft the scheme is meant for, or 'any'.", "scheme", _TARGET_CRAFTS),
        _boolean("scheme_women_priority", "Scheme gives priority to women applicants.", "scheme"),
        _boolean("scheme_requires_artisan_card", "Scheme expects a registered artisan card.", "scheme"),
    ),
    label=LabelSpec(
        name="application_outcome",
        positive_class="approved",
        negative_class="rejected",
        description="Whether the scheme application was approved.",
    ),
)


@dataclass(frozen=True)
class DemoScheme:
    """One government scheme in the demo catalogue, with its scheme-group features."""

    scheme_id: str
    name: str
    benefit_inr: float
    features: Row


@dataclass(frozen=True)
class DemoExample:
    """One application outcome: features, the drawn label and the true approval probability."""

    outcome_id: str
    features: Row
    label: bool
    probability: float
    entities: dict[str, str]
    occurred_at: datetime


def _scheme(
    scheme_id: str,
    name: str,
    kind: str,
    benefit: float,
    min_age: float,
    max_age: float,
    ceiling: float | None = None,
    targets: str = "any",
    women: bool = False,
    card: bool = False,
) -> DemoScheme:
    """A catalogue entry; ``ceiling=None`` means the scheme has no income limit."""
    features: Row = {
        "scheme_type": kind,
        "scheme_max_benefit_inr": float(benefit),
        "scheme_min_age": float(min_age),
        "scheme_max_age": float(max_age),
        "scheme_targets_craft": targets,
        "scheme_women_priority": women,
        "scheme_requires_artisan_card": card,
    }
    if ceiling is not None:
        features["scheme_income_ceiling_inr"] = float(ceiling)
    return DemoScheme(scheme_id, name, float(benefit), features)


# Benefits, age windows and ceilings are simplified from the public scheme rules.
SCHEMES: tuple[DemoScheme, ...] = (
    _scheme("pmegp", "PMEGP margin-money loan", "loan", 2_500_000, 18, 90),
    _scheme("mudra_shishu", "PM Mudra Yojana - Shishu", "loan", 50_000, 18, 65),
    _scheme("mudra_kishore", "PM Mudra Yojana - Kishore", "loan", 500_000, 18, 65),
    _scheme("mudra_tarun", "PM Mudra Yojana - Tarun", "loan", 1_000_000, 21, 65),
    _scheme("stand_up_india", "Stand-Up India loan", "loan", 1_000_000, 18, 65, women=True),
    _scheme("pm_vishwakarma_credit", "PM Vishwakarma collateral-free credit", "loan", 300_000, 18, 90, card=True),
    _scheme("artisan_credit_card", "Artisan Credit Card", "loan", 200_000, 18, 70, card=True),
    _scheme("weaver_mudra", "Weaver MUDRA loan", "loan", 200_000, 18, 65, targets="weaver"),
    _scheme("pm_vishwakarma_toolkit", "PM Vishwakarma toolkit incentive", "subsidy", 15_000, 18, 90, card=True),
    _scheme("ahvy", "Ambedkar Hastshilp Vikas Yojana", "subsidy", 100_000, 18, 90, ceiling=300_000, card=True),
    _scheme(
        "nhdp_loom",
        "National Handloom Development Programme - loom upgrade",
        "subsidy",
        90_000,
        18,
        90,
        ceiling=400_000,
        targets="weaver",
    ),
    _scheme(
        "kumhar_sashaktikaran",
        "KVIC Kumhar Sashaktikaran (electric wheel)",
        "subsidy",
        25_000,
        18,
        70,
        targets="potter",
    ),
    _scheme(
        "bamboo_mission", "National Bamboo Mission artisan support", "subsidy", 50_000, 18, 70, targets="bamboo_craft"
    ),
    _scheme("pm_vishwakarma_training", "PM Vishwakarma skill training", "training", 12_000, 18, 90, card=True),
    _scheme("samarth", "SAMARTH textile skilling", "training", 10_000, 18, 45, targets="embroiderer", women=True),
    _scheme("usttad", "USTTAD traditional-arts upgrading", "training", 15_000, 18, 45, ceiling=600_000),
    _scheme("guru_shishya", "Guru Shishya Hastshilp Prashikshan", "training", 20_000, 18, 60, targets="stone_carver"),
    _scheme("pm_sym", "PM Shram Yogi Maan-dhan pension", "pension", 36_000, 18, 40, ceiling=180_000),
    _scheme("atal_pension", "Atal Pension Yojana", "pension", 60_000, 18, 40, ceiling=700_000),
    _scheme("pmsby", "PM Suraksha Bima Yojana accident cover", "insurance", 200_000, 18, 70),
    _scheme("pmjjby", "PM Jeevan Jyoti Bima Yojana life cover", "insurance", 200_000, 18, 50),
    _scheme(
        "weaver_welfare",
        "Handloom Weavers' Comprehensive Welfare insurance",
        "insurance",
        200_000,
        18,
        59,
        targets="weaver",
    ),
)

# How often each scheme is applied for: the big credit schemes dominate.
_POPULARITY: dict[str, float] = {
    "pmegp": 4,
    "mudra_shishu": 8,
    "mudra_kishore": 5,
    "mudra_tarun": 2,
    "stand_up_india": 2,
    "pm_vishwakarma_credit": 8,
    "artisan_credit_card": 4,
    "weaver_mudra": 3,
    "pm_vishwakarma_toolkit": 6,
    "ahvy": 3,
    "nhdp_loom": 3,
    "kumhar_sashaktikaran": 2,
    "bamboo_mission": 2,
    "pm_vishwakarma_training": 5,
    "samarth": 2,
    "usttad": 2,
    "guru_shishya": 1,
    "pm_sym": 4,
    "atal_pension": 4,
    "pmsby": 5,
    "pmjjby": 4,
    "weaver_welfare": 3,
}
_SCHEME_POPULARITY = np.array([_POPULARITY[s.scheme_id] for s in SCHEMES], dtype=np.float64)

_CRAFT_SHARE = np.array([0.22, 0.10, 0.12, 0.06, 0.14, 0.07, 0.08, 0.08, 0.05, 0.08])
_STATE_SHARE = np.array([0.18, 0.12, 0.09, 0.12, 0.09, 0.11, 0.07, 0.08, 0.08, 0.06])
_SOCIAL_SHARE = np.array([0.25, 0.42, 0.20, 0.13])
# Share of women per craft: embroidery is mostly women, smithing mostly men.
_FEMALE_SHARE = np.array([0.50, 0.30, 0.05, 0.03, 0.80, 0.08, 0.40, 0.15, 0.05, 0.20])
# States differ in how remote artisans live and how far artisan-card drives have reached;
# state itself has no direct effect on approval.
_STATE_REMOTENESS = np.array([0.0, 0.25, -0.1, 0.0, 0.3, 0.15, 0.45, -0.2, -0.1, 0.5])
_STATE_CARD_DRIVE = np.array([0.4, 0.3, 0.2, 0.0, -0.2, -0.4, -0.3, 0.3, 0.1, -0.1])
# Per scheme type (loan, subsidy, training, pension, insurance): training seats are easy to get.
_TYPE_EFFECT = np.array([-0.30, -0.05, 0.60, 0.20, 0.35])
# Loans are disbursed to a bank account; training barely needs one.
_BANK_EFFECT = np.array([1.70, 0.50, 0.10, 0.85, 0.70])
_WEAVER = _CRAFTS.index("weaver")
_EMBROIDERER = _CRAFTS.index("embroiderer")
_DOC_COUNT = 8  # documents_complete_share counts submitted items of an 8-item checklist
_DEFAULT_START = datetime(2024, 4, 1, tzinfo=UTC)  # fixed so that output depends on the seed only

# Scale and offset of the summed effects, tuned for an expected Bayes accuracy of about 0.87
# and a positive rate of about 0.5; the effects' sizes below are relative.
_SCALE = 1.43
_OFFSET = -2.30


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function."""
    out: np.ndarray = 1.0 / (1.0 + np.exp(-x))
    return out


def _choice(rng: np.random.Generator, weights: np.ndarray, n: int) -> np.ndarray:
    """Draw ``n`` indices from one weight vector, or one per row of a weight matrix."""
    cum = np.cumsum(weights, axis=-1)
    u = rng.random(n) * (cum[..., -1] if weights.ndim > 1 else cum[-1])
    idx: np.ndarray
    if weights.ndim == 1:
        idx = np.searchsorted(cum, u, side="right")
    else:
        idx = np.minimum((cum <= u[:, None]).sum(axis=1), weights.shape[1] - 1)
    return idx


def _artisan_columns(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Artisan features as columns: floats (NaN = missing), category codes, bools."""
    age = np.clip(np.round(rng.gamma(9.0, 4.6, n) + 6.0), 18.0, 85.0)
    craft = _choice(rng, _CRAFT_SHARE, n)
    state = _choice(rng, _STATE_SHARE, n)
    female = rng.random(n) < _FEMALE_SHARE[craft]
    gender = np.where(rng.random(n) < 0.015, 2, np.where(female, 0, 1))
    social = _choice(rng, _SOCIAL_SHARE, n)
    # Younger artisans are better educated; overall about 33/24/20/12/7 % none .. graduate.
    edu_latent = rng.normal(0.0, 1.0, n) - 0.025 * (age - 40.0) - 0.25 * (social >= 2)
    education = np.searchsorted(np.array([-0.67, 0.0, 0.67, 1.28]), edu_latent).astype(np.int64)
    start_age = 12.0 + rng.exponential(7.0, n)
    experience = np.clip(np.round(age - start_age), 0.0, 70.0)
    log_income = (
        np.log(75_000.0)
        + 0.22 * (education - 1.5)
        + 0.12 * np.log1p(experience)
        - 0.2 * (social >= 2)
        + rng.normal(0.0, 0.55, n)
    )
    income = np.maximum(np.round(np.exp(log_income), -2), 6_000.0)
    bank = rng.random(n) < _sigmoid(0.9 + 0.45 * education + 0.6 * (log_income - np.log(90_000.0)))
    # A hidden diligence trait ties paperwork, card holding and past success together.
    diligence = rng.normal(0.0, 1.0, n)
    card = rng.random(n) < _sigmoid(
        -0.6 + 0.04 * np.minimum(experience, 30.0) + 0.5 * diligence + _STATE_CARD_DRIVE[state]
    )
    doc_quality = _sigmoid(1.0 + 0.9 * diligence + 0.25 * education + 0.5 * card)
    documents = rng.binomial(_DOC_COUNT, doc_quality) / _DOC_COUNT
    prior_apps = np.minimum(rng.poisson(0.3 + 0.06 * np.minimum(experience, 30.0)), 30).astype(np.float64)
    prior_ok = rng.binomial(prior_apps.astype(np.int64), _sigmoid(-0.2 + 0.8 * diligence)).astype(np.float64)
    distance = np.clip(np.round(np.exp(rng.normal(np.log(12.0) + _STATE_REMOTENESS[state], 0.75, n)), 1), 0.5, 300.0)
    # Income goes undeclared more often by the unbanked, i.e. informal, households.
    income_missing = rng.random(n) < np.where(bank, 0.075, 0.22)
    income[income_missing] = np.nan
    education = np.where(rng.random(n) < 0.05, -1, education)
    distance[rng.random(n) < 0.08] = np.nan
    return {
        "age": age,
        "annual_income_inr": income,
        "years_experience": experience,
        "craft": craft,
        "state": state,
        "gender": gender,
        "social_category": social,
        "education": education,
        "has_bank_account": bank,
        "has_artisan_card": card,
        "documents_complete_share": documents,
        "prior_applications": prior_apps,
        "prior_approvals": prior_ok,
        "distance_to_office_km": distance,
    }


_CATEGORIES: dict[str, tuple[str, ...]] = {
    f.name: f.categories for f in DEMO_SCHEMA.features if f.type is FeatureType.CATEGORICAL
}
_KINDS: dict[str, FeatureType] = {f.name: f.type for f in DEMO_SCHEMA.features}


def _rows_to_columns(rows: Sequence[Mapping[str, FeatureValue]]) -> dict[str, np.ndarray]:
    """Rows to the internal column form (missing -> NaN or code -1)."""
    cols: dict[str, np.ndarray] = {}
    for name, kind in _KINDS.items():
        if kind is FeatureType.NUMERIC:
            cols[name] = np.array([float(r.get(name, math.nan)) for r in rows], dtype=np.float64)
        elif kind is FeatureType.CATEGORICAL:
            index = {c: i for i, c in enumerate(_CATEGORIES[name])}
            cols[name] = np.array([index.get(str(r[name]), -1) if name in r else -1 for r in rows], dtype=np.int64)
        else:
            cols[name] = np.array([bool(r.get(name, False)) for r in rows], dtype=bool)
    return cols


# The scheme catalogue in column form, indexed by position in SCHEMES.
_SCHEME_COLUMNS = _rows_to_columns([s.features for s in SCHEMES])


def _effects(c: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The true log-odds of approval split into named additive effects (before scale and offset)."""
    age = c["age"]
    kind = c["scheme_type"]
    is_loan = kind == 0
    income = c["annual_income_inr"]
    has_income = ~np.isnan(income)
    safe_income = np.where(has_income, np.maximum(income, 1.0), 90_000.0)
    ceiling = c["scheme_income_ceiling_inr"]
    has_ceiling = ~np.isnan(ceiling)
    over = np.log(safe_income / np.where(has_ceiling, ceiling, 1.0))
    outside = np.maximum(np.maximum(c["scheme_min_age"] - age, age - c["scheme_max_age"]), 0.0)
    target = c["scheme_targets_craft"]
    gender = c["gender"]
    distance = c["distance_to_office_km"]
    return {
        # Eligibility is a hard rule; the small remainder is officer discretion and data errors.
        "age_window": -5.5 * (1.0 - np.exp(-outside / 0.6)),
        "income_ceiling": np.where(has_income & has_ceiling, -3.5 * _sigmoid(12.0 * over), 0.0),
        # Lenders want repayment capacity; other schemes do not look at income below the ceiling.
        "income": 0.6 * np.tanh(np.log(safe_income / 90_000.0)) * (has_income & is_loan),
        # Undeclared income makes officers cautious.
        "income_missing": -0.35 * ~has_income,
        "experience": 1.0 * (1.0 - np.exp(-c["years_experience"] / 5.0)) - 0.5,
        "documents": 3.9 * _sigmoid(14.0 * (c["documents_complete_share"] - 0.7)) - 2.3,
        "craft_match": np.where(target == 0, 0.0, np.where(target - 1 == c["craft"], 0.9, -2.2)),
        "women_priority": c["scheme_women_priority"] * np.where(gender == 0, 1.1, np.where(gender == 2, 0.5, -0.4)),
        "bank_account": _BANK_EFFECT[kind] * np.where(c["has_bank_account"], 1.0, -1.0),
        "artisan_card": np.where(c["scheme_requires_artisan_card"], 1.3, 0.5)
        * np.where(c["has_artisan_card"], 1.0, -1.0),
        # Past approvals show a reliable applicant, with diminishing returns.
        "history": 0.5 * np.log1p(c["prior_approvals"]) - 0.2,
        "distance": np.where(np.isnan(distance), -0.06, -0.2 * np.log1p(np.nan_to_num(distance) / 10.0)),
        "scheme_type": _TYPE_EFFECT[kind],
        "benefit_size": -0.2 * np.log10(c["scheme_max_benefit_inr"] / 50_000.0),
    }


def _latent(c: Mapping[str, np.ndarray]) -> np.ndarray:
    """The true log-odds of approval for columns ``c`` (before scale and offset)."""
    total: np.ndarray = np.sum(list(_effects(c).values()), axis=0)
    return total


def _probability(c: Mapping[str, np.ndarray]) -> np.ndarray:
    """The true approval probability for columns ``c``."""
    return _sigmoid(_SCALE * _latent(c) + _OFFSET)


def _pick_schemes(rng: np.random.Generator, craft: np.ndarray, age: np.ndarray) -> np.ndarray:
    """Which scheme each artisan applies to: craft-targeted schemes attract their own craft."""
    target = _SCHEME_COLUMNS["scheme_targets_craft"][None, :] - 1  # -1: open to any craft
    # Embroiderers often apply to the handloom weavers' schemes, which then turn them down.
    textile_mixup = (target == _WEAVER) & (craft[:, None] == _EMBROIDERER)
    match = np.where(target < 0, 1.0, np.where(target == craft[:, None], 5.0, np.where(textile_mixup, 0.6, 0.005)))
    # Helpers screen most applicants for age, but many older artisans mistake the contributory
    # pension schemes (entry age up to 40) for an old-age pension and apply anyway.
    eligible = (age[:, None] >= _SCHEME_COLUMNS["scheme_min_age"][None, :]) & (
        age[:, None] <= _SCHEME_COLUMNS["scheme_max_age"][None, :]
    )
    pension = (_SCHEME_COLUMNS["scheme_type"] == 3)[None, :]
    age_pull = np.where(eligible, 1.0, np.where(pension, 0.35, 0.02))
    return _choice(rng, _SCHEME_POPULARITY[None, :] * match * age_pull, len(craft))


def _columns_to_rows(c: Mapping[str, np.ndarray], names: Sequence[str]) -> list[Row]:
    """Column form back to rows of Python floats, strs and bools; missing values become absent keys."""
    lists: list[list[FeatureValue | None]] = []
    for name in names:
        kind = _KINDS[name]
        col = c[name]
        if kind is FeatureType.NUMERIC:
            values = col.tolist()
            if np.isnan(col).any():
                values = [None if v != v else v for v in values]
        elif kind is FeatureType.CATEGORICAL:
            labels: list[str | None] = [*_CATEGORIES[name], None]  # code -1 indexes the None
            values = [labels[i] for i in col.tolist()]
        else:
            values = col.tolist()
        lists.append(values)
    # Build rows from the complete columns in one pass, then add the sparse ones key by key.
    n = len(next(iter(c.values())))
    complete = [i for i, v in enumerate(lists) if None not in v]
    partial = [i for i, v in enumerate(lists) if None in v]
    keys_complete = [names[i] for i in complete]
    rows: list[Row] = [dict(zip(keys_complete, vals)) for vals in zip(*(lists[i] for i in complete))]
    if not complete:
        rows = [{} for _ in range(n)]
    for i in partial:
        key = names[i]
        for row, v in zip(rows, lists[i]):
            if v is not None:
                row[key] = v
    return rows


_ARTISAN_NAMES: tuple[str, ...] = tuple(f.name for f in DEMO_SCHEMA.features if f.group == "artisan")


def generate_artisan(rng: np.random.Generator) -> Row:
    """One random artisan's features (artisan group only), drawn like ``generate_outcomes`` does."""
    return _columns_to_rows(_artisan_columns(rng, 1), _ARTISAN_NAMES)[0]


def approval_probability(features: Row) -> float:
    """The true approval probability of a valid ``DEMO_SCHEMA`` row; ``ValueError`` for an invalid one."""
    errors = DEMO_SCHEMA.validate_row(features)
    if errors:
        raise ValueError("; ".join(f"{e.field}: {e.reason}" for e in errors))
    return float(_probability(_rows_to_columns([features]))[0])


def generate_outcomes(
    n: int, seed: int = 0, start: datetime | None = None, span: timedelta = timedelta(days=180)
) -> list[DemoExample]:
    """``n`` labelled applications, deterministic in ``seed``, spread over ``[start, start + span)``."""
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    if span <= timedelta(0):
        raise ValueError(f"span must be positive, got {span}")
    if start is None:
        start = _DEFAULT_START
    elif start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    start = start.astimezone(UTC)
    rng = np.random.default_rng(seed)
    cols = _artisan_columns(rng, n)
    scheme_idx = _pick_schemes(rng, cols["craft"], cols["age"])
    groups = {f.name: f.group for f in DEMO_SCHEMA.features}
    for name, values in _SCHEME_COLUMNS.items():
        if groups[name] == "scheme":
            cols[name] = values[scheme_idx]
    prob = _probability(cols)
    labels = (rng.random(n) < prob).tolist()
    span_us = span // timedelta(microseconds=1)
    offsets = np.sort(rng.integers(0, span_us, n)).tolist()
    rows = _columns_to_rows(cols, DEMO_SCHEMA.names)
    scheme_ids = [SCHEMES[i].scheme_id for i in scheme_idx.tolist()]
    return [
        DemoExample(
            outcome_id=f"demo-{seed}-{i}",
            features=row,
            label=label,
            probability=p,
            entities={"artisan_id": f"artisan-{seed}-{i}", "scheme_id": sid},
            occurred_at=start + timedelta(microseconds=off),
        )
        for i, (row, label, p, sid, off) in enumerate(zip(rows, labels, prob.tolist(), scheme_ids, offsets))
    ]


def bayes_optimal_accuracy(probabilities: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray) -> float:
    """Accuracy of predicting approved iff the true probability is >= 0.5, on these labels."""
    p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=bool).reshape(-1)
    if p.size != y.size:
        raise ValueError(f"{p.size} probabilities but {y.size} labels")
    return float(np.mean((p >= 0.5) == y)) if p.size else math.nan


def expected_bayes_accuracy(probabilities: Sequence[float] | np.ndarray) -> float:
    """Expected accuracy of the Bayes rule: the mean of max(p, 1 - p)."""
    p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    return float(np.mean(np.maximum(p, 1.0 - p))) if p.size else math.nan
