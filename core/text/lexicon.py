"""Words a shopper filters clothes by: what tags mined from descriptions may be.

A description says "Ideal for cold-weather training, the hoodie promises superior warmth"; TF-IDF alone ranks
"promise" and "superior" beside "hoodie". Only words of these kinds become tags. Nouns are singular, as the miner
lemmatises them (core.text.tags). Extend the sets for a catalogue with its own vocabulary; each set is one kind, so the
share of a vocabulary that is garment language can be counted by kind (BENCHMARKS.md, "Tags").
"""

from __future__ import annotations

GARMENT_TYPES = frozenset("""
    anorak bag backpack bandeau beanie belt bermuda blazer blouse bodysuit bomber boot bottom bra brief cami
    camisole capri cardigan cargo chino coat crop culotte denim dress duffle gilet glove gown halter hat headband
    hoodie jacket jean jegging jersey jogger jumper jumpsuit kimono legging leotard messenger onesie outerwear
    overall pack pant parka polo poncho pullover purse raincoat robe romper sandal sarong satchel scarf shell shirt
    shoe short skirt skort sleeveless slipper sneaker sock sport-bra suit sundress sweater sweatpant sweatshirt
    swimsuit tank tee tight top tote tracksuit trainer trouser tunic turtleneck undershirt vest watch windbreaker
    wrap
""".split())

GARMENT_PARTS = frozenset("""
    armhole back band bottom buckle button cuff drawstring elastic front hem hemline hood inseam lining neck
    neckline panel pocket racerback seam shoulder sleeve strap thumbhole trim waist waistband yoke zip zipper
    collar placket chest handle compartment pouch mesh-panel
""".split())

MATERIALS = frozenset("""
    acrylic bamboo canvas cashmere chiffon corduroy cotton denim down elastane fabric faux flannel fleece jersey
    knit lace leather linen lycra merino mesh microfiber modal nylon polyester rayon rubber satin silicone silk
    spandex suede synthetic terry twill velvet viscose wool wicking waterproof water-resistant windproof
    breathable moisture-wicking quick-drying stretch stretchy insulated lightweight heavyweight featherweight soft
    organic recycled
""".split())

FITS = frozenset("""
    fit baggy boxy close-fitting compression cropped fitted form-fitting high-rise long loose low-rise mid-rise
    oversized regular relaxed short skinny slim straight tailored tight wide wide-leg full-length ankle-length
    knee-length mini midi maxi sleeveless short-sleeve long-sleeve v-neck crew crewneck
""".split())

COLOURS = frozenset("""
    beige black blue brown burgundy camel charcoal cream gold gray green grey khaki lavender maroon navy olive
    orange pink purple red rose silver tan teal turquoise white yellow multicolor neon pastel dark light bright
""".split())

PATTERNS = frozenset("""
    camo camouflage check checked colorblock color-blocked dotted floral geometric graphic heather herringbone
    houndstooth logo melange paisley plaid print printed solid stripe striped tie-dye tartan two-tone
""".split())

USES = frozenset("""
    active athletic beach bike casual cold-weather commute everyday formal gym hiking layering lounge outdoor
    party performance rain running sleep sport summer swim tennis training travel warm-weather winter work
    workout yoga cycling climbing weekend office
""".split())

KINDS = {"garment type": GARMENT_TYPES, "part": GARMENT_PARTS, "material": MATERIALS, "fit": FITS,
         "colour": COLOURS, "pattern": PATTERNS, "use": USES}
FASHION_WORDS = frozenset().union(*KINDS.values())
