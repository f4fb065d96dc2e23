"""Which categories of one catalogue a person accepts for a garment of another: the map the cross-domain benchmark
scores with (``core.bench.cross_domain``), kept as data where a reader finds it.

Catalogues name the same garments differently ("T-Shirt" and "Tees", "Outwear" and "Jackets") and cut them at
different places (the shop's "Bras & Tanks" are the garment photos' "Undershirt", "Top" or "Body"). A query of
category ``c`` in catalogue A is right in catalogue B when a hit's category is in ``ACCEPTED[A, B][c]``. The rows
are written per direction because acceptance is not symmetric: a shop's "Tanks" may be a garment photo's "T-Shirt"
(a sleeveless tee), but a T-shirt photo should find the shop's Tees, not its tank tops.

Categories with no counterpart are left out of a direction with the reason in ``LEFT_OUT``; a test checks that every
category of both built-in catalogues is either mapped or left out with a reason.

``SHARED_CLASS`` is the other use of the map: one class per garment, whatever the catalogue calls it, so that a
projection fitted on several catalogues (``core.search.shared_space``), or a network trained on them together
(``core.catalog.union``), learns that a phone photo of a T-shirt and a shop's Tee are one thing. Catalogues listed
there form one group; a category not listed keeps a class of its own.
"""

from __future__ import annotations

GARMENT_PHOTOS, SHOP, FASHION_MNIST = "garment-photos", "luma-shop", "fashion-mnist"

ACCEPTED: dict[tuple[str, str], dict[str, tuple[str, ...]]] = {
    (GARMENT_PHOTOS, SHOP): {
        "Pants": ("Pants",),
        "Hoodie": ("Hoodies & Sweatshirts", "Jackets"),  # a zip hoodie is sold as a jacket too
        "Longsleeve": ("Hoodies & Sweatshirts", "Tees"),  # a sweatshirt, or a long-sleeved tee
        "T-Shirt": ("Tees",),
        "Polo": ("Tees",),  # the shop sells its polos among the tees
        "Outwear": ("Jackets",),
        "Blazer": ("Jackets",),  # added to the map: a blazer is a tailored jacket
        "Shorts": ("Shorts",),
        "Undershirt": ("Tanks", "Bras & Tanks"),
        "Top": ("Tanks", "Bras & Tanks", "Tees"),
    },
    (SHOP, GARMENT_PHOTOS): {
        "Pants": ("Pants",),
        "Hoodies & Sweatshirts": ("Hoodie", "Longsleeve"),
        "Tees": ("T-Shirt", "Polo"),
        "Jackets": ("Outwear", "Blazer", "Hoodie"),
        "Shorts": ("Shorts",),
        "Bras & Tanks": ("Undershirt", "Top", "Body"),
        "Tanks": ("Undershirt", "Top", "T-Shirt"),
    },
    # The smoke photos (../shared/photos) are labelled in Fashion-MNIST's categories.
    (FASHION_MNIST, GARMENT_PHOTOS): {
        "T-shirt/top": ("T-Shirt", "Top", "Polo", "Undershirt"),
        "Shirt": ("Shirt", "Blouse", "Longsleeve"),
        "Trouser": ("Pants",),
        "Pullover": ("Longsleeve", "Hoodie"),
        "Coat": ("Outwear", "Blazer"),
        "Dress": ("Dress",),
        "Sandal": ("Shoes",),
        "Sneaker": ("Shoes",),
        "Ankle boot": ("Shoes",),
    },
    (FASHION_MNIST, SHOP): {
        "T-shirt/top": ("Tees", "Tanks", "Bras & Tanks"),
        "Shirt": ("Tees",),  # the shop sells no woven shirts; its nearest garment is a tee
        "Trouser": ("Pants",),
        "Pullover": ("Hoodies & Sweatshirts",),
        "Coat": ("Jackets",),
        "Bag": ("Bags",),
    },
}

LEFT_OUT: dict[tuple[str, str], dict[str, str]] = {
    (GARMENT_PHOTOS, SHOP): {c: "the shop sells none" for c in
                             ("Blouse", "Body", "Dress", "Hat", "Shirt", "Shoes", "Skirt")},
    (SHOP, GARMENT_PHOTOS): {"Bags": "the garment photos have no bags",
                             "Watches": "the garment photos have no watches"},
}


# One class per garment across the catalogues of a group (the discriminant's labels). Where the accepted map is looser
# (a Longsleeve may be a sweatshirt or a tee), the class is the garment's own: only clear equivalents are merged.
SHARED_CLASS: dict[str, dict[str, str]] = {
    GARMENT_PHOTOS: {"T-Shirt": "tee", "Polo": "tee", "Hoodie": "hoodie", "Outwear": "jacket", "Blazer": "jacket",
                     "Undershirt": "tank", "Top": "tank", "Pants": "pants", "Shorts": "shorts"},
    SHOP: {"Tees": "tee", "Hoodies & Sweatshirts": "hoodie", "Jackets": "jacket", "Tanks": "tank",
           "Bras & Tanks": "tank", "Pants": "pants", "Shorts": "shorts"},
}


# Catalogues whose train splits are fitted together, each with its classes in SHARED_CLASS.
SHARED_GROUPS: list[tuple[str, ...]] = [(GARMENT_PHOTOS, SHOP)]


def shared_group(name: str) -> list[str]:
    """The catalogues whose train splits a shared projection for ``name`` is fitted on (``name`` included, sorted);
    [] for a catalogue outside every group (a user's catalogue, Fashion-MNIST)."""
    return next((sorted(group) for group in SHARED_GROUPS if name in group), [])


def shared_class(catalogue: str, category: str) -> str:
    """The category's class across its group; a category with no counterpart is a class of its own."""
    return SHARED_CLASS.get(catalogue, {}).get(category, f"{catalogue}: {category}")


def accepted(source: str, target: str, category: str) -> tuple[str, ...]:
    """The categories of ``target`` a person accepts for a ``source`` garment of ``category``; () when the pair or
    the category has no counterpart (the query is then left out, never scored as wrong)."""
    return ACCEPTED.get((source, target), {}).get(category, ())


def mapped_pairs() -> list[tuple[str, str]]:
    return list(ACCEPTED)

