"""Demo data: products with local names and prices per market, and users with carts and wallets.

Everything is deterministic (SKU `KG-0001`, the n-th user's phone) and every
insert is `ON CONFLICT DO NOTHING`, so seeding again adds only what is missing:
`seed --users 50` after `seed --users 20` adds 30 users.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import phonenumbers
from sqlalchemy import Table, exists, select
from sqlalchemy.dialects.postgresql import insert

from marketgraph.db.databases import Databases, open_databases
from marketgraph.db.models.app import (
    Cart,
    Product,
    Wallet,
    WalletTransaction,
    WalletTransactionKind,
)
from marketgraph.db.models.auth import User
from marketgraph.errors import DomainError
from marketgraph.markets import Market, MarketRegistry, detect_market
from marketgraph.settings import Settings

DEFAULT_PRODUCTS = 60
DEFAULT_USERS = 20
BATCH_SIZE = 1000

# Called after each batch with (market code, rows just written): drives a progress bar.
ProgressHook = Callable[[str, int], None]

_products = cast(Table, Product.__table__)
_users = cast(Table, User.__table__)
_carts = cast(Table, Cart.__table__)
_wallets = cast(Table, Wallet.__table__)
_wallet_transactions = cast(Table, WalletTransaction.__table__)


@dataclass(frozen=True, slots=True)
class CatalogItem:
    name: str
    price_minor: int
    category: str


@dataclass(frozen=True, slots=True)
class Locale:
    """A market's demo vocabulary: catalog, brands for variants, names, the starting balance."""

    catalog: tuple[CatalogItem, ...]
    brands: tuple[str, ...]
    male_names: tuple[tuple[str, ...], tuple[str, ...]]  # (first names, last names)
    female_names: tuple[tuple[str, ...], tuple[str, ...]]
    category_label: str
    grant_reason: str
    starting_balance_minor: int
    brand_first: bool  # "Acme Whole Milk" vs "Молоко «Ала-Тоо»"
    charm_prices: bool  # variant prices end in .99 rather than a whole unit


def _items(category: str, *pairs: tuple[str, int]) -> tuple[CatalogItem, ...]:
    return tuple(CatalogItem(name, price, category) for name, price in pairs)


# Prices in whole som; stored ×100 in tyiyn.
_KG_CATALOG = tuple(
    CatalogItem(item.name, item.price_minor * 100, item.category)
    for item in (
        *_items(
            "Чай и кофе",
            ("Чай чёрный 100 г", 120),
            ("Чай зелёный 100 г", 140),
            ("Кофе молотый 250 г", 520),
            ("Кофе растворимый 95 г", 390),
        ),
        *_items(
            "Бакалея",
            ("Сахар 1 кг", 95),
            ("Мука пшеничная 2 кг", 150),
            ("Рис 1 кг", 160),
            ("Гречка 900 г", 130),
            ("Макароны 450 г", 70),
            ("Масло подсолнечное 1 л", 190),
            ("Мёд горный 500 г", 450),
        ),
        *_items(
            "Молочные продукты",
            ("Молоко 2,5 % 1 л", 85),
            ("Кефир 1 л", 90),
            ("Айран 1 л", 75),
            ("Сметана 20 % 400 г", 140),
            ("Масло сливочное 200 г", 230),
            ("Сыр твёрдый 300 г", 420),
            ("Кумыс 1 л", 160),
        ),
        *_items(
            "Хлеб и выпечка",
            ("Хлеб белый 500 г", 35),
            ("Лепёшка тандырная", 30),
            ("Боорсоки 500 г", 180),
        ),
        *_items(
            "Мясо и птица",
            ("Говядина 1 кг", 650),
            ("Баранина 1 кг", 700),
            ("Курица охлаждённая 1 кг", 320),
            ("Яйца куриные 10 шт", 150),
        ),
        *_items(
            "Овощи, фрукты, сухофрукты",
            ("Картофель 1 кг", 40),
            ("Лук репчатый 1 кг", 35),
            ("Морковь 1 кг", 45),
            ("Помидоры 1 кг", 120),
            ("Яблоки 1 кг", 110),
            ("Курага 500 г", 380),
            ("Изюм 500 г", 250),
            ("Грецкие орехи 500 г", 400),
        ),
        *_items(
            "Напитки и сладости",
            ("Вода минеральная 1,5 л", 55),
            ("Сок яблочный 1 л", 120),
            ("Максым 1 л", 60),
            ("Шоколад молочный 90 г", 110),
        ),
        *_items(
            "Бытовая химия",
            ("Мыло туалетное 100 г", 45),
            ("Зубная паста 100 мл", 150),
            ("Шампунь 400 мл", 320),
            ("Стиральный порошок 3 кг", 650),
        ),
    )
)

# Prices in cents.
_US_CATALOG = (
    *_items(
        "Tea & coffee",
        ("Black Tea, 100 bags", 499),
        ("Green Tea, 40 bags", 399),
        ("Ground Coffee 12 oz", 899),
        ("Instant Coffee 8 oz", 749),
    ),
    *_items(
        "Pantry",
        ("Granulated Sugar 4 lb", 349),
        ("All-Purpose Flour 5 lb", 429),
        ("Long Grain Rice 2 lb", 279),
        ("Spaghetti 16 oz", 179),
        ("Tomato Sauce 24 oz", 299),
        ("Extra Virgin Olive Oil 16.9 fl oz", 1099),
        ("Clover Honey 12 oz", 649),
        ("Peanut Butter 16 oz", 369),
        ("Maple Syrup 12 fl oz", 899),
        ("Corn Flakes 18 oz", 479),
    ),
    *_items(
        "Dairy & eggs",
        ("Whole Milk 1 gal", 419),
        ("Greek Yogurt 32 oz", 599),
        ("Salted Butter 1 lb", 549),
        ("Cheddar Cheese 8 oz", 399),
        ("Large Eggs, 12 ct", 379),
    ),
    *_items(
        "Bakery",
        ("Sandwich Bread 20 oz", 329),
        ("Plain Bagels, 6 ct", 449),
        ("Blueberry Muffins, 4 ct", 599),
    ),
    *_items(
        "Meat & poultry",
        ("Ground Beef 1 lb", 599),
        ("Chicken Breast 1 lb", 499),
        ("Smoked Bacon 12 oz", 649),
    ),
    *_items(
        "Produce",
        ("Russet Potatoes 5 lb", 499),
        ("Yellow Onions 3 lb", 349),
        ("Bananas 1 lb", 69),
        ("Gala Apples 3 lb", 499),
        ("Baby Carrots 1 lb", 199),
    ),
    *_items(
        "Drinks & snacks",
        ("Sparkling Water, 12 pk", 599),
        ("Orange Juice 52 fl oz", 449),
        ("Milk Chocolate Bar 1.55 oz", 199),
        ("Potato Chips 8 oz", 429),
    ),
    *_items(
        "Household",
        ("Bar Soap, 4 ct", 549),
        ("Toothpaste 4.8 oz", 349),
        ("Shampoo 12 fl oz", 699),
        ("Laundry Detergent 92 fl oz", 1299),
        ("Paper Towels, 6 rolls", 1099),
    ),
)

_KG_SURNAMES = ("Асанов", "Токтогулов", "Осмонов", "Исаков", "Жумабеков", "Садыков", "Мамытов")
_US_SURNAMES = ("Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis")


LOCALES: dict[str, Locale] = {
    "kg": Locale(
        catalog=_KG_CATALOG,
        brands=("Ала-Тоо", "Ысык-Көл", "Нарын", "Талас", "Тянь-Шань", "Чүй"),
        male_names=(
            ("Айбек", "Бакыт", "Эрлан", "Нурлан", "Азамат", "Данияр", "Темирлан"),
            _KG_SURNAMES,
        ),
        female_names=(
            ("Айгерим", "Асель", "Жылдыз", "Нургуль", "Бермет", "Айпери", "Динара"),
            tuple(s + "а" for s in _KG_SURNAMES),
        ),
        category_label="Категория",
        grant_reason="Демо-баланс",
        starting_balance_minor=5_000_00,
        brand_first=False,
        charm_prices=False,
    ),
    "us": Locale(
        catalog=_US_CATALOG,
        brands=("Acme", "Blue Ridge", "Golden Gate", "Lone Star", "Great Lakes", "Prairie"),
        male_names=(
            ("James", "Robert", "John", "Michael", "David", "William", "Daniel"),
            _US_SURNAMES,
        ),
        female_names=(
            ("Mary", "Patricia", "Jennifer", "Linda", "Elizabeth", "Susan", "Emily"),
            _US_SURNAMES,
        ),
        category_label="Category",
        grant_reason="Demo balance",
        starting_balance_minor=100_00,
        brand_first=True,
        charm_prices=True,
    ),
}

# US numbers: fictional 555 exchanges in a few big cities' area codes.
_US_AREA_CODES = (212, 415, 312, 617, 206, 512, 303, 305)


def locale_for(market: Market) -> Locale:
    """The market's demo vocabulary; markets added by MARKETS_FILE get the English one."""
    return LOCALES.get(market.code, LOCALES["us"])


def demo_products(market: Market, count: int) -> list[dict[str, Any]]:
    """The first `count` demo products of `market` as insert rows (the same rows every time).

    Past the base catalog come brand variants at prices within ±20 %; every
    twentieth product is out of stock, so the catalog shows that case too.
    """
    locale = locale_for(market)
    catalog = locale.catalog
    rows = []
    for i in range(count):
        item = catalog[i % len(catalog)]
        series = i // len(catalog)
        name, price = item.name, item.price_minor
        if series:
            brand = locale.brands[(series - 1) % len(locale.brands)]
            round_ = (series - 1) // len(locale.brands)
            if round_:
                brand = f"{brand} {round_ + 1}"
            name = f"{brand} {name}" if locale.brand_first else f"{name} «{brand}»"
            price = _vary(price, i, charm=locale.charm_prices)
        rows.append(
            {
                "sku": f"{market.code.upper()}-{i + 1:04d}",
                "name": name,
                "description": f"{locale.category_label}: {item.category}",
                "price_minor": price,
                "stock": 0 if i % 20 == 19 else 5 + (i * 37) % 96,
            }
        )
    return rows


def _vary(price_minor: int, i: int, *, charm: bool) -> int:
    """A price within ±20 % of `price_minor`, rounded to a whole unit (less 1 when `charm`)."""
    varied = price_minor * (80 + (i * 37) % 41) // 100
    whole = max(100, (varied + 50) // 100 * 100)
    return whole - 1 if charm else whole


def demo_phones(market: Market, markets: MarketRegistry) -> Iterator[str]:
    """The market's demo phone numbers in E.164, in a fixed order, each valid for the market.

    KG: mobile +996 70x; US: the 555 exchange of a few area codes; other
    markets: counting up from `phonenumbers`' example mobile number. Candidates
    that `detect_market` does not place in `market` are skipped.
    """
    for candidate in _phone_candidates(market):
        try:
            owner, e164 = detect_market(candidate, markets)
        except DomainError:
            continue
        if owner.code == market.code:
            yield e164


def _phone_candidates(market: Market) -> Iterator[str]:
    if market.code == "kg":
        for k in range(10_000_000):
            yield f"+996{700_000_001 + k}"
    elif market.code == "us":
        for k in range(len(_US_AREA_CODES) * 10_000 * 100):
            area = _US_AREA_CODES[k % len(_US_AREA_CODES)]
            j = k // len(_US_AREA_CODES)
            # 555-0100 … 555-0199 are the numbers set aside for fiction; go on from there.
            line = 100 + j
            yield f"+1{area}{555 + line // 10_000}{line % 10_000:04d}"
    else:
        for region in market.phone_regions:
            example = phonenumbers.example_number_for_type(
                region, phonenumbers.PhoneNumberType.MOBILE
            )
            if example is None or example.national_number is None:
                continue
            base = example.national_number
            for k in range(1_000_000):
                yield f"+{example.country_code}{base + k}"


def demo_users(market: Market, markets: MarketRegistry, count: int) -> list[dict[str, Any]]:
    """The first `count` demo users of `market` as insert rows (ids are left to the default)."""
    locale = locale_for(market)
    rows = []
    phones = demo_phones(market, markets)
    for i in range(count):
        phone = next(phones, None)
        if phone is None:
            raise ValueError(f"market {market.code} has no more demo phone numbers than {i}")
        first_names, last_names = locale.female_names if i % 2 else locale.male_names
        # Walks through every (first, last) combination before repeating one.
        k = i // 2
        first_name = first_names[k % len(first_names)]
        last_name = last_names[(k + k // len(first_names)) % len(last_names)]
        rows.append(
            {
                "phone": phone,
                "email": f"demo.{market.code}{i + 1:04d}@example.com",
                "first_name": first_name,
                "last_name": last_name,
                "language": market.language,
                "timezone": market.timezone,
            }
        )
    return rows


@dataclass(slots=True)
class SeedCounts:
    """Rows one seeding run added to a market's stores (existing rows are not counted)."""

    products: int = 0
    users: int = 0
    carts: int = 0
    wallets: int = 0


@dataclass(slots=True)
class SeedResult:
    by_market: dict[str, SeedCounts] = field(default_factory=dict)

    @property
    def total(self) -> SeedCounts:
        total = SeedCounts()
        for counts in self.by_market.values():
            total.products += counts.products
            total.users += counts.users
            total.carts += counts.carts
            total.wallets += counts.wallets
        return total


def _batches(rows: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


async def seed(
    databases: Databases,
    *,
    users: int = DEFAULT_USERS,
    products: int = DEFAULT_PRODUCTS,
    on_progress: ProgressHook | None = None,
    batch_size: int = BATCH_SIZE,
) -> SeedResult:
    """Make sure every market has its first `products` demo products and `users` demo users.

    A user is written to the auth store first, then its cart and wallet to the
    app store; the app rows are looked up by phone each time, so a run that
    stopped between the two stores is finished by the next one.
    """
    markets = databases.settings.markets
    result = SeedResult()
    for market in markets:
        counts = result.by_market[market.code] = SeedCounts()
        app = databases.store(market.code, "app")
        auth = databases.store(market.code, "auth")
        for batch in _batches(demo_products(market, products), batch_size):
            async with app.begin() as session:
                stmt = insert(_products).on_conflict_do_nothing().returning(_products.c.id)
                counts.products += len((await session.execute(stmt, batch)).all())
            if on_progress is not None:
                on_progress(market.code, len(batch))
        locale = locale_for(market)
        for batch in _batches(demo_users(market, markets, users), batch_size):
            async with auth.begin() as session:
                stmt = insert(_users).on_conflict_do_nothing().returning(_users.c.id)
                counts.users += len((await session.execute(stmt, batch)).all())
                found = await session.execute(
                    select(_users.c.id).where(_users.c.phone.in_([row["phone"] for row in batch]))
                )
                user_ids = [row.id for row in found]
            async with app.begin() as session:
                owners = [{"user_id": user_id} for user_id in user_ids]
                if owners:
                    stmt = insert(_carts).on_conflict_do_nothing().returning(_carts.c.id)
                    counts.carts += len((await session.execute(stmt, owners)).all())
                    wallets = [
                        {**owner, "balance_minor": locale.starting_balance_minor}
                        for owner in owners
                    ]
                    new_wallets = (
                        insert(_wallets)
                        .on_conflict_do_nothing()
                        .returning(_wallets.c.id, _wallets.c.user_id)
                    )
                    created = (await session.execute(new_wallets, wallets)).all()
                    counts.wallets += len(created)
                    # The starting balance is a GRANT in the ledger, written with the wallet.
                    grants = [
                        {
                            "wallet_id": row.id,
                            "user_id": row.user_id,
                            "kind": WalletTransactionKind.GRANT,
                            "amount_minor": locale.starting_balance_minor,
                            "reason": locale.grant_reason,
                        }
                        for row in created
                    ]
                    if grants:
                        await session.execute(insert(_wallet_transactions), grants)
            if on_progress is not None:
                on_progress(market.code, len(batch))
    return result


async def is_catalog_empty(databases: Databases) -> bool:
    """True when no market's app store holds a product."""
    for market in databases.settings.markets:
        async with databases.store(market.code, "app").connect() as conn:
            if await conn.scalar(select(exists().select_from(_products))):
                return False
    return True


async def seed_if_empty(settings: Settings) -> SeedResult | None:
    """Load the demo data when the catalog of every market is empty; None when it was not."""
    databases = await open_databases(settings)
    try:
        if not await is_catalog_empty(databases):
            return None
        return await seed(databases)
    finally:
        await databases.dispose()
