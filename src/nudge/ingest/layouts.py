"""File layouts nudge imports: the generic one and presets for common exports.

A layout maps each canonical field of an entity to the header names that may
carry it in a file (matched without regard to case or surrounding spaces), and
may reshape the frame afterwards (e.g. Online Retail's "C" invoices).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd

from nudge.errors import ImportFileError, NudgeError

Kind = Literal["customers", "products", "orders", "events"]
KINDS: tuple[Kind, ...] = ("customers", "products", "orders", "events")

# Canonical fields of each entity: the generic layout's header, in order.
FIELDS: dict[Kind, tuple[str, ...]] = {
    "customers": (
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
    ),
    "products": (
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
    ),
    "orders": (
        "order_id",
        "customer_id",
        "ordered_at",
        "product_id",
        "quantity",
        "unit_price",
        "currency",
        "status",
        "title",
        "email",
        "country",
    ),
    "events": (
        "customer_id",
        "event_type",
        "occurred_at",
        "product_id",
        "query",
        "event_id",
    ),
}

REQUIRED: dict[Kind, tuple[str, ...]] = {
    "customers": ("customer_id",),
    "products": ("product_id",),
    "orders": ("order_id", "ordered_at", "product_id", "quantity", "unit_price"),
    "events": ("customer_id", "event_type", "occurred_at"),
}

Reshape = Callable[[pd.DataFrame], pd.DataFrame]


@dataclass(frozen=True)
class Layout:
    """How one file format names an entity's fields, and how to reshape it."""

    name: str
    kind: Kind
    columns: Mapping[str, tuple[str, ...]]
    reshape: Reshape | None = None
    dayfirst: bool = False
    # Rows of one entity spread over several lines (Shopify products): the
    # later lines fill the gaps of the first and are counted as merged.
    merge_duplicates: bool = False
    notes: str = ""
    # Canonical fields the reshape step fills in itself.
    produces: tuple[str, ...] = ()
    extra: Mapping[str, str] = field(default_factory=dict)

    def resolve(self, header: list[str], path: Path) -> dict[str, str]:
        """Map each canonical field to the file's column, failing on a missing one."""
        by_lower = {h.strip().lower(): h for h in header}
        mapping: dict[str, str] = {}
        for name in FIELDS[self.kind]:
            for alias in self.columns.get(name, (name,)):
                if alias.lower() in by_lower:
                    mapping[name] = by_lower[alias.lower()]
                    break
        for name in REQUIRED[self.kind]:
            if name not in mapping:
                wanted = " or ".join(repr(a) for a in self.columns.get(name, (name,)))
                raise ImportFileError(
                    path,
                    f"missing column {wanted} (needed for {name} in the "
                    f"{self.name} layout of {self.kind})",
                )
        return mapping


def _generic(kind: Kind) -> Layout:
    return Layout("generic", kind, {})


# Online Retail (UCI): invoices starting with "C" cancel earlier lines and
# carry negative quantities; customer ids sometimes arrive as "13085.0".
def _online_retail_orders(frame: pd.DataFrame) -> pd.DataFrame:
    cancelled = frame["order_id"].str.upper().str.startswith("C")
    frame["status"] = cancelled.map({True: "cancelled", False: "placed"})
    quantity = frame["quantity"].str.strip()
    negative = quantity.str.startswith("-")
    frame["quantity"] = quantity.where(~(cancelled & negative), quantity.str[1:])
    frame["customer_id"] = (
        frame["customer_id"].str.strip().str.replace(r"\.0+$", "", regex=True)
    )
    return frame


_ONLINE_RETAIL = Layout(
    "online-retail",
    "orders",
    {
        "order_id": ("invoice", "InvoiceNo", "Invoice"),
        "product_id": ("stock_code", "StockCode"),
        "title": ("description", "Description"),
        "quantity": ("quantity", "Quantity"),
        "ordered_at": ("invoice_date", "InvoiceDate"),
        "unit_price": ("price", "UnitPrice", "Price"),
        "customer_id": ("customer_id", "CustomerID", "Customer ID"),
        "country": ("country", "Country"),
    },
    reshape=_online_retail_orders,
    produces=("status",),
    notes="cancellations are invoices starting with C; rows without a customer "
    "id are guest orders",
)


def _email_key(frame: pd.DataFrame) -> pd.DataFrame:
    # Shopify's order export has no customer id, only the e-mail, so nudge
    # keys Shopify customers by their lower-cased e-mail in every file.
    frame["customer_id"] = frame["email"].str.strip().str.lower()
    return frame


def _shopify_orders(frame: pd.DataFrame) -> pd.DataFrame:
    frame = _email_key(frame)
    sku = frame["product_id"].str.strip()
    frame["product_id"] = sku.where(sku != "", frame["title"].str.strip())
    cancelled = frame.pop("_cancelled_at").str.strip() != ""
    refunded = frame["status"].str.strip().str.lower().isin(["refunded"])
    frame["status"] = "placed"
    frame.loc[refunded, "status"] = "returned"
    frame.loc[cancelled, "status"] = "cancelled"
    return frame


_SHOPIFY_ORDERS = Layout(
    "shopify",
    "orders",
    {
        "order_id": ("Name",),
        "email": ("Email",),
        "customer_id": ("Email",),
        "ordered_at": ("Created at", "Paid at"),
        "product_id": ("Lineitem sku",),
        "title": ("Lineitem name",),
        "quantity": ("Lineitem quantity",),
        "unit_price": ("Lineitem price",),
        "currency": ("Currency",),
        "status": ("Financial Status",),
        "country": ("Billing Country", "Shipping Country"),
    },
    reshape=_shopify_orders,
    produces=("status", "customer_id"),
    extra={"_cancelled_at": "Cancelled at"},
    notes="customers are keyed by lower-cased e-mail; a line without SKU uses "
    "its name; 'Cancelled at' marks cancellations, financial status "
    "'refunded' returns",
)

_HTML_TAG = re.compile(r"<[^>]+>")


def _shopify_products(frame: pd.DataFrame) -> pd.DataFrame:
    frame["description"] = (
        frame["description"]
        .str.replace(_HTML_TAG, " ", regex=True)
        .str.split()
        .str.join(" ")
    )
    handle = frame["product_id"].str.strip()
    frame["product_url"] = frame["product_url"].where(
        frame["product_url"].str.strip() != "", "/products/" + handle
    )
    quantity = pd.to_numeric(frame.pop("_inventory"), errors="coerce")
    frame["in_stock"] = quantity.map(lambda q: "" if pd.isna(q) else str(q > 0).lower())
    status = frame.pop("_status").str.strip().str.lower()
    frame.loc[status.isin(["archived", "draft"]), "in_stock"] = "false"
    return frame


_SHOPIFY_PRODUCTS = Layout(
    "shopify",
    "products",
    {
        "product_id": ("Handle",),
        "title": ("Title",),
        "description": ("Body (HTML)", "Body HTML"),
        "category": ("Type", "Product Category"),
        "brand": ("Vendor",),
        "price": ("Variant Price",),
        "image_url": ("Image Src", "Variant Image"),
        "product_url": ("URL", "Product URL"),
        "created_at": ("Created at", "Published at"),
    },
    reshape=_shopify_products,
    produces=("in_stock", "product_url"),
    extra={
        "_inventory": "Variant Inventory Qty",
        "_status": "Status",
        "_sku": "Variant SKU",
    },
    merge_duplicates=True,
    notes="one product per handle: variant and image rows fill the first row's "
    "gaps; in stock when a variant has inventory; variant SKUs become aliases, "
    "so order lines naming a SKU find the product",
)

_SHOPIFY_CUSTOMERS = Layout(
    "shopify",
    "customers",
    {
        "customer_id": ("Email",),
        "email": ("Email",),
        "first_name": ("First Name",),
        "last_name": ("Last Name",),
        "country": ("Default Address Country Code", "Country Code", "Country"),
        "accepts_marketing": ("Accepts Email Marketing", "Accepts Marketing"),
        "created_at": ("Created at",),
    },
    reshape=_email_key,
    produces=("customer_id",),
    notes="keyed by lower-cased e-mail, as Shopify's order export is",
)


def _map_status(mapping: Mapping[str, str]) -> Reshape:
    def reshape(frame: pd.DataFrame) -> pd.DataFrame:
        raw = frame["status"].str.strip().str.lower()
        frame["status"] = raw.map(lambda s: mapping.get(s, s))
        # Both platforms write customer id 0 for a guest checkout.
        guest = frame["customer_id"].str.strip() == "0"
        frame.loc[guest, "customer_id"] = ""
        return frame

    return reshape


_WOO_STATUS = {
    "completed": "placed",
    "processing": "placed",
    "on-hold": "placed",
    "pending": "placed",
    "wc-completed": "placed",
    "wc-processing": "placed",
    "cancelled": "cancelled",
    "wc-cancelled": "cancelled",
    "failed": "cancelled",
    "refunded": "returned",
    "wc-refunded": "returned",
}

_WOOCOMMERCE_ORDERS = Layout(
    "woocommerce",
    "orders",
    {
        "order_id": ("Order ID", "Order Number"),
        "customer_id": ("Customer User ID", "Customer ID", "Billing Email"),
        "email": ("Billing Email", "Customer Email"),
        "ordered_at": ("Order Date", "Date"),
        "product_id": ("SKU", "Item SKU", "Product ID"),
        "title": ("Item Name", "Product Name"),
        "quantity": ("Quantity", "Item Quantity", "Qty"),
        "unit_price": ("Item Cost", "Item Price", "Price"),
        "currency": ("Order Currency", "Currency"),
        "status": ("Order Status", "Status"),
        "country": ("Billing Country",),
    },
    reshape=_map_status(_WOO_STATUS),
    notes="one row per line item; statuses completed/processing/on-hold count "
    "as placed, cancelled/failed as cancelled, refunded as returned",
)

_BIGCOMMERCE_STATUS = {
    "completed": "placed",
    "shipped": "placed",
    "awaiting fulfillment": "placed",
    "awaiting shipment": "placed",
    "awaiting pickup": "placed",
    "partially shipped": "placed",
    "pending": "placed",
    "cancelled": "cancelled",
    "declined": "cancelled",
    "refunded": "returned",
    "partially refunded": "placed",
}

_BIGCOMMERCE_ORDERS = Layout(
    "bigcommerce",
    "orders",
    {
        "order_id": ("Order ID",),
        "customer_id": ("Customer ID", "Customer Email"),
        "email": ("Customer Email",),
        "ordered_at": ("Order Date",),
        "product_id": ("Product SKU", "Product ID"),
        "title": ("Product Name",),
        "quantity": ("Product Qty", "Quantity"),
        "unit_price": ("Product Unit Price", "Product Price"),
        "currency": ("Order Currency Code", "Currency"),
        "status": ("Order Status",),
        "country": ("Billing Country",),
    },
    reshape=_map_status(_BIGCOMMERCE_STATUS),
    dayfirst=True,
    notes="one row per line item ('Export all orders' with products in rows); "
    "dates are day first",
)

PRESETS: dict[str, dict[Kind, Layout]] = {
    "generic": {kind: _generic(kind) for kind in KINDS},
    "online-retail": {"orders": _ONLINE_RETAIL},
    "shopify": {
        "orders": _SHOPIFY_ORDERS,
        "products": _SHOPIFY_PRODUCTS,
        "customers": _SHOPIFY_CUSTOMERS,
    },
    "woocommerce": {"orders": _WOOCOMMERCE_ORDERS},
    "bigcommerce": {"orders": _BIGCOMMERCE_ORDERS},
}


def layout_for(fmt: str, kind: Kind) -> Layout:
    """Return the layout of a preset for an entity, or a clear error."""
    if fmt not in PRESETS:
        known = ", ".join(sorted(PRESETS))
        raise NudgeError(f"--format {fmt}: unknown format; known formats: {known}")
    if kind not in PRESETS[fmt]:
        known = ", ".join(PRESETS[fmt])
        raise NudgeError(f"--format {fmt}: no layout for {kind} (it has: {known})")
    return PRESETS[fmt][kind]
