"""Generate a seeded synthetic shop, and the hidden truth behind it, for ``nudge demo``.

The shop comes out in nudge's generic import layout, so the demo goes through
the same importers as a real shop. Customers follow a BG/NBD-like process: while
alive each buys at a gamma-distributed Poisson rate, and after any purchase drops
out with a beta-distributed probability. What they buy follows their category
affinities and price sensitivity, the refill rhythm of consumables, and products
that are often bought together. Everything is drawn from one
``numpy.random.default_rng(seed)``, so a seed always gives byte-identical files.

Times are handled as fractional days since the shop opened (``end - days``) and
turned into whole UTC seconds only when the frames are built.
"""

from __future__ import annotations

import math
import re
import unicodedata
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from nudge.errors import ConfigError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

DEFAULT_END = datetime(2026, 11, 30, tzinfo=UTC)
CURRENCY = "GBP"
SHOP_URL = "https://demo-shop.example"

CUSTOMER_COLUMNS: tuple[str, ...] = (
    "customer_id",
    "email",
    "first_name",
    "last_name",
    "country",
    "timezone",
    "created_at",
    "accepts_marketing",
    "consent_source",
    "consent_at",
    "unsubscribed_at",
    "favourite_categories",
    "max_emails_per_week",
)
PRODUCT_COLUMNS: tuple[str, ...] = (
    "product_id",
    "title",
    "description",
    "category",
    "brand",
    "price",
    "currency",
    "image_url",
    "product_url",
    "in_stock",
    "created_at",
)
ORDER_COLUMNS: tuple[str, ...] = (
    "order_id",
    "customer_id",
    "ordered_at",
    "product_id",
    "quantity",
    "unit_price",
    "currency",
    "status",
)
EVENT_COLUMNS: tuple[str, ...] = (
    "customer_id",
    "event_type",
    "occurred_at",
    "product_id",
    "query",
)
EVENT_TYPES: tuple[str, ...] = ("view", "add_to_cart", "search")

_MINUTE = 1 / 1440
_SECOND = 1 / 86400
_NEW_ARRIVAL_DAYS = 30.0


@dataclass(frozen=True)
class Category:
    """A product category: its vocabulary, brands, price band and buying rhythm."""

    name: str
    weight: float  # relative share of the catalogue and of shoppers' interest
    price_band: tuple[float, float]
    partner: str  # the category whose products are often bought alongside
    brands: tuple[str, ...]
    nouns: tuple[str, ...]
    variants: tuple[str, ...]
    phrases: tuple[str, ...]
    refill_days: tuple[float, float] | None = None  # consumables are re-bought


CATEGORIES: tuple[Category, ...] = (
    Category(
        "Candles",
        1.2,
        (8.0, 36.0),
        "Home Decor",
        brands=("Wickford & Co", "Hearth Lane"),
        nouns=(
            "Soy Candle",
            "Pillar Candle",
            "Tealight Set",
            "Reed Diffuser",
            "Travel Tin",
            "Wax Melts",
        ),
        variants=(
            "Fig & Cassis",
            "Sea Salt",
            "Amber",
            "Lavender",
            "Cedarwood",
            "Orange Blossom",
            "Black Pepper",
            "Rhubarb",
            "Vanilla Bean",
            "Wild Mint",
        ),
        phrases=(
            "hand-poured in small batches with a cotton wick",
            "scented with essential oils and made to burn slowly and cleanly",
        ),
        refill_days=(40.0, 75.0),
    ),
    Category(
        "Kitchen",
        1.0,
        (6.0, 60.0),
        "Tea & Coffee",
        brands=("Hollow Oak", "Maple & Moss"),
        nouns=(
            "Chopping Board",
            "Tea Towel",
            "Mixing Bowl",
            "Apron",
            "Butter Dish",
            "Utensil Jar",
        ),
        variants=(
            "Oak",
            "Olive Wood",
            "Linen",
            "Enamel",
            "Speckled",
            "Terracotta",
            "Sage",
            "Charcoal",
            "Mustard",
        ),
        phrases=(
            "made to be used every day and to last for years",
            "simple to clean and good-looking enough to leave out",
        ),
    ),
    Category(
        "Mugs",
        0.9,
        (8.0, 24.0),
        "Tea & Coffee",
        brands=("Kittiwake", "Hollow Oak"),
        nouns=("Mug", "Espresso Cup", "Latte Mug", "Mug Set", "Travel Cup"),
        variants=(
            "Speckled Stoneware",
            "Hand-thrown",
            "Dachshund",
            "Botanical",
            "Navy Stripe",
            "Robin",
            "Mountain",
            "Hare",
            "Matte Black",
            "Bee",
        ),
        phrases=(
            "dishwasher safe and comfortable to hold",
            "glazed by hand, so no two are quite the same",
        ),
    ),
    Category(
        "Tea & Coffee",
        1.1,
        (4.0, 18.0),
        "Mugs",
        brands=("Brew Theory", "Saltmarsh"),
        nouns=(
            "Loose Leaf Tea",
            "Tea Bags",
            "Ground Coffee",
            "Coffee Beans",
            "Coffee Pods",
        ),
        variants=(
            "Breakfast",
            "Afternoon",
            "House Blend",
            "Single Origin",
            "Smooth",
            "Spiced",
            "Organic",
            "Decaf",
            "Fairtrade",
            "Strong",
        ),
        phrases=(
            "roasted or blended in small lots and packed in a resealable pouch",
            "ethically sourced and best enjoyed within three months",
        ),
        refill_days=(21.0, 40.0),
    ),
    Category(
        "Stationery",
        1.0,
        (3.0, 25.0),
        "Mugs",
        brands=("Paper Swallow", "Little Fern"),
        nouns=(
            "Notebook",
            "Pencil Set",
            "Greeting Card",
            "Planner",
            "Washi Tape",
            "Sticky Notes",
        ),
        variants=(
            "Dotted",
            "Floral",
            "Kraft",
            "Marbled",
            "Pocket",
            "Pastel",
            "Gingham",
            "Linen",
            "Recycled",
        ),
        phrases=(
            "printed on recycled paper that takes ink without bleeding",
            "a small thing that makes a desk feel like your own",
        ),
    ),
    Category(
        "Home Decor",
        1.1,
        (10.0, 80.0),
        "Candles",
        brands=("Maple & Moss", "Northbrook"),
        nouns=(
            "Cushion Cover",
            "Throw",
            "Vase",
            "Photo Frame",
            "Wall Print",
            "Plant Pot",
        ),
        variants=(
            "Boucle",
            "Rattan",
            "Ribbed",
            "Ceramic",
            "Linen",
            "Brass",
            "Jute",
            "Stoneware",
            "Velvet",
        ),
        phrases=(
            "an easy way to make a room feel warmer",
            "designed in-house and made in limited runs",
        ),
    ),
    Category(
        "Garden",
        0.7,
        (5.0, 45.0),
        "Home Decor",
        brands=("Northbrook", "Little Fern"),
        nouns=(
            "Seed Kit",
            "Trowel",
            "Bird Feeder",
            "Watering Can",
            "Herb Planter",
            "Plant Labels",
        ),
        variants=(
            "Galvanised",
            "Wildflower",
            "Copper",
            "Heritage",
            "Bee-friendly",
            "Zinc",
            "Oak",
        ),
        phrases=(
            "built for muddy hands and British weather",
            "everything you need to get something growing this season",
        ),
    ),
    Category(
        "Bath & Body",
        1.0,
        (5.0, 30.0),
        "Candles",
        brands=("Saltmarsh", "Wickford & Co"),
        nouns=(
            "Hand Wash",
            "Hand Cream",
            "Bath Salts",
            "Soap Bar",
            "Body Lotion",
            "Lip Balm",
        ),
        variants=(
            "Neroli",
            "Oat & Honey",
            "Eucalyptus",
            "Geranium",
            "Seaweed",
            "Grapefruit",
            "Rose",
            "Lemongrass",
            "Sandalwood",
        ),
        phrases=(
            "made with natural oils and kind to dry skin",
            "a gentle everyday treat that smells like a holiday",
        ),
        refill_days=(30.0, 60.0),
    ),
    Category(
        "Toys",
        0.7,
        (6.0, 40.0),
        "Stationery",
        brands=("Little Fern", "Kittiwake"),
        nouns=(
            "Wooden Puzzle",
            "Plush Bunny",
            "Stacking Rings",
            "Building Blocks",
            "Kite",
        ),
        variants=(
            "Rainbow",
            "Woodland",
            "Ocean",
            "Dinosaur",
            "Classic",
            "Jungle",
            "Space",
        ),
        phrases=(
            "finished with child-safe paints and tested for little hands",
            "a gift that gets played with long after the wrapping is gone",
        ),
    ),
    Category(
        "Jewellery",
        0.6,
        (12.0, 90.0),
        "Stationery",
        brands=("Kittiwake", "Saltmarsh"),
        nouns=(
            "Necklace",
            "Hoop Earrings",
            "Stud Earrings",
            "Bracelet",
            "Ring",
            "Anklet",
        ),
        variants=(
            "Sterling Silver",
            "Gold-plated",
            "Pearl",
            "Hammered",
            "Moonstone",
            "Rose Gold",
        ),
        phrases=(
            "nickel-free and sent in a gift box",
            "delicate enough to wear every day",
        ),
    ),
)
CATEGORY_NAMES: tuple[str, ...] = tuple(c.name for c in CATEGORIES)

FIRST_NAMES: tuple[str, ...] = (
    "Olivia", "Amelia", "Isla", "Ava", "Mia", "Grace", "Freya", "Sophie", "Zoë",
    "Siân", "Aoife", "Priya", "Fatima", "Chloe", "Emily", "Hannah", "Lucy", "Renée",
    "Ruby", "Maja", "Oliver", "George", "Harry", "Noah", "Jack", "Leo", "Arthur",
    "Oscar", "Charlie", "Thomas", "James", "Mohammed", "Rohan", "Liam", "Conor",
    "Mateo", "Samuel", "Daniel", "Ethan", "Kwame",
)  # fmt: skip
LAST_NAMES: tuple[str, ...] = (
    "Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies",
    "Patel", "Robinson", "Wright", "Thompson", "Evans", "Walker", "White", "Roberts",
    "Green", "Hall", "Wood", "Jackson", "Clarke", "Khan", "O'Brien", "Murphy",
    "Kelly", "Nowak", "Müller", "Dubois", "García", "Hughes", "Edwards", "Lewis",
    "Harris", "Martin", "Cooper", "Ward", "Turner", "Hill", "Moore", "Mensah",
)  # fmt: skip
COUNTRIES: tuple[tuple[str, float, tuple[str, ...]], ...] = (
    ("GB", 0.68, ("Europe/London",)),
    ("IE", 0.07, ("Europe/Dublin",)),
    ("FR", 0.05, ("Europe/Paris",)),
    ("DE", 0.05, ("Europe/Berlin",)),
    ("NL", 0.04, ("Europe/Amsterdam",)),
    ("US", 0.07, ("America/New_York", "America/Chicago", "America/Los_Angeles")),
    ("CA", 0.02, ("America/Toronto", "America/Vancouver")),
    ("AU", 0.02, ("Australia/Sydney", "Australia/Melbourne")),
)


@dataclass(frozen=True, eq=False)
class SyntheticShop:
    """A generated shop in the generic layout, with the truth that generated it.

    ``customers``, ``products``, ``orders`` and ``events`` hold exactly what the
    CSV files hold: text cells (``""`` where a cell is empty), ``quantity`` as an
    integer, and times as ISO 8601 UTC strings ending in ``Z``.

    ``tastes`` is the hidden truth about each customer, one row per
    ``customer_id``: one column per name in ``CATEGORY_NAMES`` with the
    customer's affinity for it (the row sums to 1), ``price_sensitivity`` (0 to
    1, higher prefers cheaper products), ``purchase_rate`` (expected purchases a
    day while alive), ``dropout_probability`` (chance of leaving for good after
    each purchase), ``first_purchase_at`` (NaT for those who never bought),
    ``churned`` and ``churned_at`` (the purchase after which they left, NaT
    while still alive),
    ``open_rate`` (chance of opening a marketing e-mail) and ``click_rate``
    (chance of clicking, given an open).

    ``product_truth`` is the hidden truth about each product: ``category``,
    ``popularity`` (multiplier on everyone's liking), ``consumable``,
    ``refill_days`` (typical gap between re-buys, NaN when not a consumable),
    ``companion_id`` (a product often bought alongside it) and
    ``out_of_stock_since`` (NaT while in stock).
    """

    customers: pd.DataFrame
    products: pd.DataFrame
    orders: pd.DataFrame
    events: pd.DataFrame
    tastes: pd.DataFrame
    product_truth: pd.DataFrame
    end: datetime

    def frames(self) -> dict[str, pd.DataFrame]:
        """Return the four importable frames by entity name."""
        return {
            "customers": self.customers,
            "products": self.products,
            "orders": self.orders,
            "events": self.events,
        }


def generate_shop(
    *,
    seed: int = 7,
    customers: int = 3000,
    products: int = 400,
    end: datetime | None = None,
    days: int = 730,
) -> SyntheticShop:
    """Generate a synthetic shop; the same arguments always give the same shop."""
    _check_at_least("customers", customers, 1)
    _check_at_least("products", products, len(CATEGORIES))
    _check_at_least("days", days, 30)
    end = _whole_utc_seconds(DEFAULT_END if end is None else end)
    rng = np.random.default_rng(seed)

    catalogue = _make_catalogue(rng, products, days)
    people = _make_people(rng, customers, days)
    liking = np.cumsum(_taste_weights(people, catalogue), axis=1)
    purchases = _simulate_purchases(rng, people, days)
    lines = _fill_orders(rng, purchases, liking, catalogue, days)
    events = _make_events(rng, lines, purchases, people, liking, catalogue, days)

    clock = _Clock(end - timedelta(days=days))
    return SyntheticShop(
        customers=_customer_frame(rng, people, clock, days),
        products=_product_frame(catalogue, clock),
        orders=_order_frame(lines, people, catalogue, clock),
        events=_event_frame(events, people, catalogue, clock),
        tastes=_taste_frame(people, purchases, clock),
        product_truth=_product_truth_frame(catalogue, clock),
        end=end,
    )


def write_csv(shop: SyntheticShop, folder: Path) -> dict[str, Path]:
    """Write the shop's four CSV files into a folder and return them by entity."""
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name, frame in shop.frames().items():
        path = folder / f"{name}.csv"
        frame.to_csv(path, index=False, lineterminator="\n", encoding="utf-8")
        paths[name] = path
    return paths


def _check_at_least(key: str, value: int, minimum: int) -> None:
    """Refuse a size below its minimum, naming the argument."""
    if value < minimum:
        raise ConfigError(f"must be at least {minimum}, got {value}", key=key)


def _whole_utc_seconds(moment: datetime) -> datetime:
    """Return the moment in UTC without sub-second digits, reading naive as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(microsecond=0)


@dataclass(frozen=True)
class _Clock:
    """Turn fractional days since the shop opened into UTC times."""

    start: datetime

    def seconds(self, day: FloatArray) -> IntArray:
        """Return whole epoch seconds, rounding down so no time moves past another."""
        base = int(self.start.timestamp())
        return base + np.floor(day * 86400.0).astype(np.int64)

    def iso(self, day: FloatArray) -> list[str]:
        """Format days as ISO 8601 UTC strings, leaving infinite days empty."""
        finite = np.isfinite(day)
        seconds = self.seconds(np.where(finite, day, 0.0)).astype("datetime64[s]")
        stamps = np.char.add(np.datetime_as_string(seconds, unit="s"), "Z")
        formatted: list[str] = np.where(finite, stamps, "").tolist()
        return formatted

    def stamps(self, day: FloatArray) -> pd.Series:
        """Return days as UTC timestamps, NaT where a day is infinite."""
        finite = np.isfinite(day)
        seconds = self.seconds(np.where(finite, day, 0.0))
        stamps = pd.Series(pd.to_datetime(seconds, unit="s", utc=True))
        return stamps.where(finite)


@dataclass(frozen=True)
class _Catalogue:
    """Products in order of creation, with their hidden traits."""

    created: FloatArray
    category: IntArray
    title: list[str]
    brand: list[str]
    description: list[str]
    price: FloatArray
    popularity: FloatArray
    companion: IntArray
    refill_days: FloatArray
    out_of_stock_since: FloatArray


def _make_catalogue(rng: np.random.Generator, n: int, days: int) -> _Catalogue:
    """Draw the products, oldest first, with their prices and hidden traits."""
    created = _product_arrivals(rng, n, days)
    category = rng.permutation(_category_sizes(n)).astype(np.int64)

    title, brand, description = _product_texts(rng, category)
    low = np.array([CATEGORIES[c].price_band[0] for c in category])
    high = np.array([CATEGORIES[c].price_band[1] for c in category])
    raw = np.exp(rng.uniform(np.log(low), np.log(high)))
    price = np.maximum(np.round(raw) - 0.01, 0.99)

    refill = np.full(n, np.nan)
    for index, spec in enumerate(CATEGORIES):
        members = category == index
        if spec.refill_days is not None:
            refill[members] = rng.uniform(*spec.refill_days, size=members.sum())

    return _Catalogue(
        created=created,
        category=category,
        title=title,
        brand=brand,
        description=description,
        price=price,
        popularity=rng.lognormal(0.0, 0.9, size=n),
        companion=_companions(rng, category),
        refill_days=refill,
        out_of_stock_since=_stock_outs(rng, created, days),
    )


def _category_sizes(n: int) -> IntArray:
    """Return each product's category, sized in proportion to the category weights."""
    weights = np.array([c.weight for c in CATEGORIES])
    exact = 1 + (n - len(CATEGORIES)) * weights / weights.sum()
    sizes = np.floor(exact).astype(np.int64)

    # Hand the rounding leftovers to the largest remainders, ties to earlier ones.
    leftover = n - int(sizes.sum())
    sizes[np.argsort(sizes - exact, kind="stable")[:leftover]] += 1
    return np.repeat(np.arange(len(CATEGORIES)), sizes)


def _product_arrivals(rng: np.random.Generator, n: int, days: int) -> FloatArray:
    """Return sorted creation days: a launch range, steady additions, new arrivals."""
    window = min(_NEW_ARRIVAL_DAYS, days / 4)
    n_new = max(1, round(0.07 * n))
    n_launch = round(0.4 * n)
    launch = rng.uniform(0.0, 1.0, size=n_launch)
    steady = rng.uniform(1.0, days - window, size=n - n_new - n_launch)

    # Skewed towards the end so a few arrivals are days old and still unsold.
    new = days - window * rng.random(n_new) ** 1.5
    new = np.minimum(new, days - 0.01)
    return np.sort(np.concatenate([launch, steady, new]))


def _product_texts(
    rng: np.random.Generator, category: IntArray
) -> tuple[list[str], list[str], list[str]]:
    """Give every product a unique title, a brand and a one-sentence description."""
    n = len(category)
    title = [""] * n
    brand = [""] * n
    description = [""] * n
    picks = rng.random((n, 2)).tolist()
    for index, spec in enumerate(CATEGORIES):
        grid = [(v, noun) for noun in spec.nouns for v in spec.variants]
        order = rng.permutation(len(grid)).tolist()
        for rank, product in enumerate(np.flatnonzero(category == index).tolist()):
            variant, noun = grid[order[rank % len(grid)]]
            edition = f" No. {rank // len(grid) + 1}" if rank >= len(grid) else ""
            title[product] = f"{variant} {noun}{edition}"
            brand[product] = spec.brands[int(picks[product][0] * len(spec.brands))]
            phrase = spec.phrases[int(picks[product][1] * len(spec.phrases))]
            description[product] = f"{brand[product]}'s {title[product]}, {phrase}."
    return title, brand, description


def _companions(rng: np.random.Generator, category: IntArray) -> IntArray:
    """Pair every product with one from its partner category, often bought with it."""
    companion = np.zeros(len(category), dtype=np.int64)
    for index, spec in enumerate(CATEGORIES):
        members = np.flatnonzero(category == index)
        partners = np.flatnonzero(category == CATEGORY_NAMES.index(spec.partner))
        companion[members] = rng.choice(partners, size=len(members))
    return companion


def _stock_outs(rng: np.random.Generator, created: FloatArray, days: int) -> FloatArray:
    """Mark a handful of established products as sold out in the last weeks."""
    since = np.full(len(created), np.inf)
    established = np.flatnonzero(created < days - 45)
    count = min(len(established), max(1, round(0.02 * len(created))))
    chosen = rng.choice(established, size=count, replace=False)
    since[chosen] = days - rng.uniform(1.0, 40.0, size=count)
    return since


@dataclass(frozen=True)
class _People:
    """Customers' join days and hidden traits, indexed by customer number."""

    joined: FloatArray
    affinity: FloatArray
    price_sensitivity: FloatArray
    rate: FloatArray
    dropout: FloatArray
    first_purchase: FloatArray
    open_rate: FloatArray
    click_rate: FloatArray

    @property
    def count(self) -> int:
        """Return the number of customers."""
        return len(self.joined)


def _make_people(rng: np.random.Generator, n: int, days: int) -> _People:
    """Draw customers' join days, tastes and buying habits."""
    # A power of a uniform draw makes sign-ups grow over time, as a shop does.
    joined = 1.0 + (days - 1.0) * rng.random(n) ** 0.8

    # Most people buy within minutes of signing up (an account made at
    # checkout); the rest signed up for news first and some never buy.
    buyer = rng.random(n) < 0.85
    at_checkout = rng.random(n) < 0.5
    delay = np.where(
        at_checkout, rng.uniform(2, 20, n) * _MINUTE, rng.exponential(25.0, n)
    )
    first = np.where(buyer, joined + delay, np.inf)
    first[first >= days] = np.inf

    return _People(
        joined=joined,
        affinity=_affinities(rng, n),
        price_sensitivity=rng.beta(2.0, 2.5, n),
        rate=np.clip(rng.gamma(1.2, 1 / 28, n), 1e-4, 0.15),
        dropout=rng.beta(1.0, 5.0, n),
        first_purchase=first,
        open_rate=rng.beta(2.0, 5.0, n),
        click_rate=rng.beta(1.5, 8.0, n),
    )


def _affinities(rng: np.random.Generator, n: int) -> FloatArray:
    """Draw category affinities from a Dirichlet concentrated on 1 to 3 favourites."""
    weights = np.array([c.weight for c in CATEGORIES])
    favourites = rng.choice([1, 2, 3], size=n, p=[0.35, 0.45, 0.2])

    # Gumbel keys rank categories as weighted draws without replacement.
    keys = np.log(weights) + rng.gumbel(size=(n, len(CATEGORIES)))
    rank = np.argsort(np.argsort(-keys, axis=1), axis=1)
    alpha = np.where(rank < favourites[:, None], 4.0, 0.2)

    # A Dirichlet draw is a row of gamma draws, normalised.
    draws = rng.gamma(alpha)
    affinity: FloatArray = draws / draws.sum(axis=1, keepdims=True)
    return affinity


def _taste_weights(people: _People, catalogue: _Catalogue) -> FloatArray:
    """Return each customer's unnormalised liking of each product."""
    relative_price = np.log(catalogue.price / np.median(catalogue.price))
    slope = 1.8 * people.price_sensitivity - 0.4
    price_factor = np.exp(-np.outer(slope, relative_price))
    weights: FloatArray = (
        people.affinity[:, catalogue.category] * catalogue.popularity * price_factor
    )
    return weights


@dataclass(frozen=True)
class _Purchases:
    """Purchase moments sorted by customer, then by day, and each one's dropout."""

    customer: IntArray
    day: FloatArray
    churned_at: FloatArray  # per customer: day of the last purchase, inf if alive


def _simulate_purchases(
    rng: np.random.Generator, people: _People, days: int
) -> _Purchases:
    """Run the BG/NBD buying process for every customer up to the end day."""
    day = people.first_purchase.copy()
    alive = day < days
    churned_at = np.full(people.count, np.inf)
    who: list[IntArray] = []
    when: list[FloatArray] = []

    # One round is one more purchase for everyone still buying.
    while alive.any():
        buying = np.flatnonzero(alive)
        who.append(buying)
        when.append(day[buying])
        leaves = rng.random(len(buying)) < people.dropout[buying]
        churned_at[buying[leaves]] = day[buying[leaves]]
        day[buying] += rng.exponential(1.0 / people.rate[buying])
        alive[buying] = ~leaves & (day[buying] < days)

    customer = np.concatenate(who) if who else np.zeros(0, dtype=np.int64)
    moments = np.concatenate(when) if when else np.zeros(0)
    order = np.lexsort((moments, customer))
    return _Purchases(customer[order], moments[order], churned_at)


@dataclass(frozen=True)
class _Lines:
    """Order lines, sorted by order number, which follows the order time."""

    order: IntArray
    customer: IntArray
    day: FloatArray
    product: IntArray
    quantity: IntArray
    unit_price: FloatArray
    status: list[str]


@dataclass(frozen=True)
class _Shelf:
    """The catalogue as plain lists, fast to index one product at a time."""

    created: list[float]
    companion: list[int]
    refill_days: list[float]
    sold_out: list[float]

    @classmethod
    def of(cls, catalogue: _Catalogue) -> _Shelf:
        """Copy the catalogue's arrays into lists."""
        return cls(
            created=catalogue.created.tolist(),
            companion=catalogue.companion.tolist(),
            refill_days=catalogue.refill_days.tolist(),
            sold_out=catalogue.out_of_stock_since.tolist(),
        )


class _Shopper:
    """Fill one customer's baskets from their liking, refills and companions."""

    def __init__(self, liking: list[float], shelf: _Shelf) -> None:
        self.liking = liking
        self.shelf = shelf
        self.last_bought: dict[int, float] = {}

    def basket(self, day: float, size: int, draws: Iterator[float]) -> list[int]:
        """Return the products bought on a day; refills due come first."""
        available = bisect_right(self.shelf.created, day)
        basket = self._refills(day, size, draws)
        while len(basket) < size:
            product = self._next_pick(basket, day, available, draws)
            if product is None:
                break
            basket.append(product)

        for product in basket:
            if not math.isnan(self.shelf.refill_days[product]):
                self.last_bought[product] = day
        return basket

    def _refills(self, day: float, size: int, draws: Iterator[float]) -> list[int]:
        """Return consumables bought before that are running out and re-bought."""
        due = [
            product
            for product, last in self.last_bought.items()
            if day - last >= 0.8 * self.shelf.refill_days[product]
        ]
        wanted = [
            p for p in due[:4] if next(draws) < 0.7 and day < self.shelf.sold_out[p]
        ]
        return wanted[:size]

    def _next_pick(
        self, basket: list[int], day: float, available: int, draws: Iterator[float]
    ) -> int | None:
        """Return a companion of the last item or a product the shopper likes."""
        if basket and next(draws) < 0.35:
            companion = self.shelf.companion[basket[-1]]
            if companion < available and self._can_add(companion, basket, day):
                return companion

        # Retry a couple of times past sold-out products and ones already chosen.
        for _ in range(3):
            target = next(draws) * self.liking[available - 1]
            product = min(
                bisect_right(self.liking, target, 0, available), available - 1
            )
            if self._can_add(product, basket, day):
                return product
        return None

    def _can_add(self, product: int, basket: list[int], day: float) -> bool:
        """Tell whether a product is in stock and not in the basket yet."""
        return product not in basket and day < self.shelf.sold_out[product]


def _fill_orders(
    rng: np.random.Generator,
    purchases: _Purchases,
    liking: FloatArray,
    catalogue: _Catalogue,
    days: int,
) -> _Lines:
    """Choose the lines of every purchase, then their quantities, prices and status."""
    n_orders = len(purchases.day)
    sizes = (rng.choice(4, size=n_orders, p=[0.26, 0.3, 0.26, 0.18]) + 1).tolist()
    draws = rng.random((n_orders, 24)).tolist()
    line_order: list[int] = []
    line_product: list[int] = []

    # Purchases come grouped by customer, so one shopper serves a whole run.
    shelf = _Shelf.of(catalogue)
    shopper = _Shopper([], shelf)
    current = -1
    for index, (customer, day) in enumerate(
        zip(purchases.customer.tolist(), purchases.day.tolist(), strict=True)
    ):
        if customer != current:
            current = customer
            shopper = _Shopper(liking[customer].tolist(), shelf)
        basket = shopper.basket(day, sizes[index], iter(draws[index]))
        line_order.extend([index] * len(basket))
        line_product.extend(basket)

    # Number the orders by time, so order ids read in the order they came in.
    purchase = np.array(line_order, dtype=np.int64)
    by_time = np.lexsort((purchases.customer, purchases.day))
    number = np.empty(n_orders, dtype=np.int64)
    number[by_time] = np.arange(n_orders)
    sort = np.lexsort((np.arange(len(purchase)), number[purchase]))
    purchase = purchase[sort]
    product = np.array(line_product, dtype=np.int64)[sort]

    return _priced_lines(rng, purchase, number, product, purchases, catalogue, days)


def _priced_lines(
    rng: np.random.Generator,
    purchase: IntArray,
    number: IntArray,
    product: IntArray,
    purchases: _Purchases,
    catalogue: _Catalogue,
    days: int,
) -> _Lines:
    """Add quantities, sale prices and cancellations or returns to basket lines."""
    n = len(product)
    day = purchases.day[purchase]
    consumable = np.isfinite(catalogue.refill_days[product])
    draw = rng.random(n)
    quantity = 1 + (draw < np.where(consumable, 0.3, 0.1)).astype(np.int64)
    quantity += draw < np.where(consumable, 0.08, 0.02)

    on_sale = rng.random(n) < 0.08
    price = catalogue.price[product]
    unit_price = np.where(on_sale, np.round(price * 0.8, 2), price)

    # Whole orders get cancelled; single lines get returned once delivered.
    cancelled = (rng.random(len(purchases.day)) < 0.025)[purchase]
    returned = (rng.random(n) < 0.035) & (day < days - 7) & ~cancelled
    status = np.where(cancelled, "cancelled", np.where(returned, "returned", "placed"))

    return _Lines(
        order=np.unique(number[purchase], return_inverse=True)[1].astype(np.int64),
        customer=purchases.customer[purchase],
        day=day,
        product=product,
        quantity=quantity,
        unit_price=unit_price,
        status=status.tolist(),
    )


@dataclass(frozen=True)
class _Events:
    """Browse events; ``product`` is -1 and ``query`` set for searches."""

    customer: IntArray
    kind: IntArray  # index into EVENT_TYPES
    day: FloatArray
    product: IntArray
    query: list[str]


def _concat_events(parts: list[_Events]) -> _Events:
    """Join event batches and sort them by time."""
    customer = np.concatenate([p.customer for p in parts])
    kind = np.concatenate([p.kind for p in parts])
    day = np.concatenate([p.day for p in parts])
    product = np.concatenate([p.product for p in parts])
    query = np.array([q for p in parts for q in p.query], dtype=object)
    order = np.lexsort((kind, customer, day))
    return _Events(
        customer[order], kind[order], day[order], product[order], query[order].tolist()
    )


def _make_events(
    rng: np.random.Generator,
    lines: _Lines,
    purchases: _Purchases,
    people: _People,
    liking: FloatArray,
    catalogue: _Catalogue,
    days: int,
) -> _Events:
    """Draw views and carts before orders, and browsing that leads nowhere."""
    before = _events_before_orders(rng, lines, people, catalogue)
    customer, start, cart = _browse_sessions(rng, purchases, people, days)
    browsing = _session_events(rng, customer, start, cart, liking, catalogue, days)
    return _concat_events([before, browsing])


def _events_before_orders(
    rng: np.random.Generator, lines: _Lines, people: _People, catalogue: _Catalogue
) -> _Events:
    """Precede every order line with a view or two and an add to cart."""
    n = len(lines.day)
    views = np.minimum(1 + rng.poisson(0.6, n), 4)
    viewed = np.repeat(np.arange(n), views)
    view_lead = rng.uniform(0.01, 2.0, len(viewed))
    cart_lead = rng.uniform(1.0, 30.0, n) * _MINUTE

    # Nobody sees a product before it exists or before they have an account, so
    # leads that would reach back past that shrink to a random part of the room.
    floor = np.maximum(people.joined[lines.customer], catalogue.created[lines.product])
    room = lines.day - floor
    view_lead = np.minimum(view_lead, room[viewed] * rng.random(len(viewed)))
    cart_lead = np.minimum(cart_lead, room * rng.random(n))

    customer = np.concatenate([lines.customer[viewed], lines.customer])
    return _Events(
        customer=customer,
        kind=np.repeat(np.array([0, 1]), [len(viewed), n]),
        day=np.concatenate([lines.day[viewed] - view_lead, lines.day - cart_lead]),
        product=np.concatenate([lines.product[viewed], lines.product]),
        query=[""] * len(customer),
    )


def _browse_sessions(
    rng: np.random.Generator, purchases: _Purchases, people: _People, days: int
) -> tuple[IntArray, FloatArray, BoolArray]:
    """Draw browsing sessions while customers are interested, and fresh carts."""
    n = people.count
    churned = np.isfinite(purchases.churned_at)
    never = ~np.isfinite(people.first_purchase)

    # Interest lasts until the end for the living, fades a month after the last
    # purchase for those who left, and after a while for those who never buy.
    stop = np.where(churned, purchases.churned_at + 30.0, float(days))
    stop = np.where(never, people.joined + rng.exponential(60.0, n), stop)
    span = np.maximum(np.minimum(stop, days) - 0.05 - (people.joined + 0.01), 0.0)
    count = rng.poisson((0.5 * people.rate + 0.01) * span)

    customer = np.repeat(np.arange(n), count)
    start = people.joined[customer] + 0.01 + rng.random(len(customer)) * span[customer]
    cart = rng.random(len(customer)) < 0.12

    # A few live customers left something in their cart in the last three days,
    # so cart-abandonment campaigns always have an audience.
    recent = np.flatnonzero(
        ~never & ~churned & (people.joined < days - 3) & (rng.random(n) < 0.04)
    )
    recent_start = days - rng.uniform(0.1, 3.0, len(recent))
    return (
        np.concatenate([customer, recent]).astype(np.int64),
        np.concatenate([start, recent_start]),
        np.concatenate([cart, np.ones(len(recent), dtype=bool)]),
    )


def _session_events(
    rng: np.random.Generator,
    customer: IntArray,
    start: FloatArray,
    cart: BoolArray,
    liking: FloatArray,
    catalogue: _Catalogue,
    days: int,
) -> _Events:
    """Expand sessions into views by taste, an abandoned cart and a rare search."""
    m = len(customer)
    views = np.minimum(1 + rng.poisson(1.4, m), 8)
    first = np.cumsum(views) - views
    session = np.repeat(np.arange(m), views)
    elapsed = np.cumsum(rng.uniform(0.3, 4.0, len(session)) * _MINUTE)
    view_day = start[session] + elapsed - elapsed[first][session]
    product = _sample_by_taste(
        rng, liking, customer[session], start[session], catalogue
    )

    # The cart holds the last product seen; a search comes before the first.
    last = first + views - 1
    carted = last[cart]
    cart_day = view_day[carted] + rng.uniform(0.5, 3.0, len(carted)) * _MINUTE
    searched = np.flatnonzero(rng.random(m) < 0.08)
    search_day = start[searched] - rng.uniform(0.2, 1.0, len(searched)) * _MINUTE
    queries = _search_queries(rng, catalogue.category[product[first[searched]]])

    counts = [len(session), len(carted), len(searched)]
    day = np.concatenate([view_day, cart_day, search_day])
    return _Events(
        customer=np.concatenate(
            [customer[session], customer[cart], customer[searched]]
        ),
        kind=np.repeat(np.arange(3), counts),
        day=np.minimum(day, days - _SECOND),
        product=np.concatenate([product, product[carted], np.full(len(searched), -1)]),
        query=[""] * (counts[0] + counts[1]) + queries,
    )


def _sample_by_taste(
    rng: np.random.Generator,
    liking: FloatArray,
    customer: IntArray,
    day: FloatArray,
    catalogue: _Catalogue,
) -> IntArray:
    """Draw one product per row from the customer's liking of products then listed."""
    n_customers, n_products = liking.shape
    available = np.searchsorted(catalogue.created, day, side="right")

    # Normalised rows shifted by their row number form one ascending array,
    # so a single search draws from every row's own distribution at once.
    total = liking[:, -1]
    flat = (liking / total[:, None] + np.arange(n_customers)[:, None]).ravel()
    share = (
        rng.random(len(customer)) * liking[customer, available - 1] / total[customer]
    )
    pick = np.searchsorted(flat, customer + share, side="right") - customer * n_products
    product: IntArray = np.clip(pick, 0, available - 1).astype(np.int64)
    return product


def _search_queries(rng: np.random.Generator, category: IntArray) -> list[str]:
    """Return a search phrase from each category's vocabulary."""
    picks = rng.random((len(category), 3)).tolist()
    queries = []
    for index, (noun_pick, variant_pick, long_pick) in zip(
        category.tolist(), picks, strict=True
    ):
        spec = CATEGORIES[index]
        noun = spec.nouns[int(noun_pick * len(spec.nouns))]
        variant = spec.variants[int(variant_pick * len(spec.variants))]
        queries.append((f"{variant} {noun}" if long_pick < 0.4 else noun).lower())
    return queries


def _ids(prefix: str, count: int, width: int) -> list[str]:
    """Return zero-padded ids that stay sortable for any count."""
    width = max(width, len(str(count)))
    return [f"{prefix}{i:0{width}d}" for i in range(1, count + 1)]


def _customer_ids(count: int) -> list[str]:
    """Return customer ids such as ``C00042``."""
    return _ids("C", count, 5)


def _product_ids(count: int) -> list[str]:
    """Return product ids (SKUs) such as ``SKU-0042``."""
    return _ids("SKU-", count, 4)


def _ascii_name(name: str) -> str:
    """Fold a name to the lowercase ASCII letters an e-mail address would use."""
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z]", "", folded.lower())


def _customer_frame(
    rng: np.random.Generator, people: _People, clock: _Clock, days: int
) -> pd.DataFrame:
    """Build the customers file: identity, consent and stated preferences."""
    n = people.count
    ids = _customer_ids(n)
    first = [FIRST_NAMES[i] for i in rng.integers(len(FIRST_NAMES), size=n).tolist()]
    last = [LAST_NAMES[i] for i in rng.integers(len(LAST_NAMES), size=n).tolist()]
    domain = np.where(rng.random(n) < 0.8, "example.com", "example.org").tolist()
    email = [
        f"{_ascii_name(f)}.{_ascii_name(s)}{i + 1}@{d}"
        for i, (f, s, d) in enumerate(zip(first, last, domain, strict=True))
    ]

    shares = np.array([share for _, share, _ in COUNTRIES])
    country_index = rng.choice(len(COUNTRIES), size=n, p=shares / shares.sum())
    zone_pick = rng.random(n).tolist()
    country = [COUNTRIES[c][0] for c in country_index.tolist()]
    timezone = [
        COUNTRIES[c][2][int(u * len(COUNTRIES[c][2]))]
        for c, u in zip(country_index.tolist(), zone_pick, strict=True)
    ]

    accepts, source, consent_at, unsubscribed_at = _consent(rng, people, days)
    return pd.DataFrame(
        {
            "customer_id": ids,
            "email": email,
            "first_name": first,
            "last_name": last,
            "country": country,
            "timezone": timezone,
            "created_at": clock.iso(people.joined),
            "accepts_marketing": np.where(accepts, "true", "false").tolist(),
            "consent_source": source,
            "consent_at": clock.iso(consent_at),
            "unsubscribed_at": clock.iso(unsubscribed_at),
            "favourite_categories": _stated_favourites(rng, people, accepts),
            "max_emails_per_week": _stated_caps(rng, n),
        },
        columns=list(CUSTOMER_COLUMNS),
    )


def _consent(
    rng: np.random.Generator, people: _People, days: int
) -> tuple[BoolArray, list[str], FloatArray, FloatArray]:
    """Draw marketing consent, where it was given, and later unsubscribes."""
    n = people.count
    draw = rng.random(n)
    at_checkout = people.first_purchase - people.joined < 1 / 24
    given_day = np.where(at_checkout, people.first_purchase, people.joined)

    # About 85% consent and keep consenting; about 3% consented and later left.
    accepts = draw < 0.85
    unsubscribed = (draw >= 0.85) & (draw < 0.88) & (given_day < days - 2)
    consented = accepts | unsubscribed
    gap = rng.uniform(0.02, 1.0, n) * (days - 1 - given_day)
    source = np.where(at_checkout, "checkout", "signup_form")
    return (
        accepts,
        np.where(consented, source, "").tolist(),
        np.where(consented, given_day, np.inf),
        np.where(unsubscribed, given_day + gap, np.inf),
    )


def _stated_favourites(
    rng: np.random.Generator, people: _People, accepts: BoolArray
) -> list[str]:
    """Let a few subscribers name their one or two favourite categories."""
    n = people.count
    states = (rng.random(n) < 0.06) & accepts
    how_many = 1 + (rng.random(n) < 0.5)
    ranked = np.argsort(-people.affinity, axis=1)
    return [
        "|".join(CATEGORY_NAMES[c] for c in ranked[i, : how_many[i]])
        if states[i]
        else ""
        for i in range(n)
    ]


def _stated_caps(rng: np.random.Generator, n: int) -> list[str]:
    """Let a few customers cap how many e-mails they get a week."""
    capped = rng.random(n) < 0.04
    cap = rng.integers(1, 4, size=n)
    return [
        str(c) if on else ""
        for c, on in zip(cap.tolist(), capped.tolist(), strict=True)
    ]


def _product_frame(catalogue: _Catalogue, clock: _Clock) -> pd.DataFrame:
    """Build the products file."""
    ids = _product_ids(len(catalogue.created))
    slugs = [
        re.sub(r"[^a-z0-9]+", "-", t.lower().replace("&", "and")).strip("-")
        for t in catalogue.title
    ]
    return pd.DataFrame(
        {
            "product_id": ids,
            "title": catalogue.title,
            "description": catalogue.description,
            "category": [CATEGORY_NAMES[c] for c in catalogue.category.tolist()],
            "brand": catalogue.brand,
            "price": [f"{p:.2f}" for p in catalogue.price.tolist()],
            "currency": CURRENCY,
            "image_url": [f"{SHOP_URL}/img/{i}.jpg" for i in ids],
            "product_url": [
                f"{SHOP_URL}/products/{s}-{i.lower()}"
                for s, i in zip(slugs, ids, strict=True)
            ],
            "in_stock": np.where(
                np.isfinite(catalogue.out_of_stock_since), "false", "true"
            ).tolist(),
            "created_at": clock.iso(catalogue.created),
        },
        columns=list(PRODUCT_COLUMNS),
    )


def _order_frame(
    lines: _Lines, people: _People, catalogue: _Catalogue, clock: _Clock
) -> pd.DataFrame:
    """Build the orders file, one row per order line."""
    order_ids = _ids("ORD-", int(lines.order.max(initial=0)) + 1, 6)
    customer_ids = _customer_ids(people.count)
    product_ids = _product_ids(len(catalogue.created))
    return pd.DataFrame(
        {
            "order_id": [order_ids[o] for o in lines.order.tolist()],
            "customer_id": [customer_ids[c] for c in lines.customer.tolist()],
            "ordered_at": clock.iso(lines.day),
            "product_id": [product_ids[p] for p in lines.product.tolist()],
            "quantity": lines.quantity,
            "unit_price": [f"{p:.2f}" for p in lines.unit_price.tolist()],
            "currency": CURRENCY,
            "status": lines.status,
        },
        columns=list(ORDER_COLUMNS),
    )


def _event_frame(
    events: _Events, people: _People, catalogue: _Catalogue, clock: _Clock
) -> pd.DataFrame:
    """Build the events file."""
    customer_ids = _customer_ids(people.count)
    product_ids = _product_ids(len(catalogue.created))
    return pd.DataFrame(
        {
            "customer_id": [customer_ids[c] for c in events.customer.tolist()],
            "event_type": [EVENT_TYPES[k] for k in events.kind.tolist()],
            "occurred_at": clock.iso(events.day),
            "product_id": [
                product_ids[p] if p >= 0 else "" for p in events.product.tolist()
            ],
            "query": events.query,
        },
        columns=list(EVENT_COLUMNS),
    )


def _taste_frame(people: _People, purchases: _Purchases, clock: _Clock) -> pd.DataFrame:
    """Build the hidden truth about each customer."""
    frame = pd.DataFrame({"customer_id": _customer_ids(people.count)})
    for index, name in enumerate(CATEGORY_NAMES):
        frame[name] = people.affinity[:, index]
    frame["price_sensitivity"] = people.price_sensitivity
    frame["purchase_rate"] = people.rate
    frame["dropout_probability"] = people.dropout
    frame["first_purchase_at"] = clock.stamps(people.first_purchase)
    frame["churned"] = np.isfinite(purchases.churned_at)
    frame["churned_at"] = clock.stamps(purchases.churned_at)
    frame["open_rate"] = people.open_rate
    frame["click_rate"] = people.click_rate
    return frame


def _product_truth_frame(catalogue: _Catalogue, clock: _Clock) -> pd.DataFrame:
    """Build the hidden truth about each product."""
    ids = _product_ids(len(catalogue.created))
    return pd.DataFrame(
        {
            "product_id": ids,
            "category": [CATEGORY_NAMES[c] for c in catalogue.category.tolist()],
            "popularity": catalogue.popularity,
            "consumable": np.isfinite(catalogue.refill_days),
            "refill_days": catalogue.refill_days,
            "companion_id": [ids[c] for c in catalogue.companion.tolist()],
            "out_of_stock_since": clock.stamps(catalogue.out_of_stock_since),
        }
    )
