"""``GET /v1/projects`` and ``GET /v1/projects/{id}``: a small, fixed catalogue of made-up
projects in the shape the official SDK reads. The projects, organisations and image links are
the sandbox's inventions (the image links point at ``example.com``); the SDG numbers, titles
and colours are the United Nations' own."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from ._protocol import Call, Reply, bad, check_params, json_reply, not_found

__all__ = ["PROJECT_TYPES", "project", "project_for", "projects"]

#: Project type of each impact type that goes to a project (donations go to causes instead).
PROJECT_TYPES = {
    "tree_planted": "trees",
    "waste_removed": "ocean",
    "carbon_captured": "carbon",
    "coral_restored": "coral",
}
_LOCALES = ("en", "de", "es", "fr", "nl")
_IMAGES = "https://example.com/impactframe-sandbox"

_SDGS = {
    6: ("Clean Water and Sanitation", "#26BDE2",
        "Ensure availability and sustainable management of water and sanitation for all"),
    8: ("Decent Work and Economic Growth", "#A21942",
        "Promote sustained, inclusive and sustainable economic growth, full and productive "
        "employment and decent work for all"),
    13: ("Climate Action", "#3F7E44",
         "Take urgent action to combat climate change and its impacts"),
    14: ("Life Below Water", "#0A97D9",
         "Conserve and sustainably use the oceans, seas and marine resources for sustainable "
         "development"),
    15: ("Life on Land", "#56C02B",
         "Protect, restore and promote sustainable use of terrestrial ecosystems, sustainably "
         "manage forests, combat desertification, and halt and reverse land degradation and "
         "halt biodiversity loss"),
}  # fmt: skip


def _sdg(number: int) -> dict[str, Any]:
    title, color, description = _SDGS[number]
    return {
        "id": f"sdg-{number}",
        "number": number,
        "title": title,
        "description": description,
        "color": color,
        "link": f"https://sdgs.un.org/goals/goal{number}",
        "icon_url": f"{_IMAGES}/sdg-{number}.png",
    }


def _project(
    project_id: str,
    name: str,
    kind: str,
    place: tuple[str, str, float, float],
    organization: str,
    about: list[str],
    sdgs: tuple[int, ...],
    *,
    available: bool = True,
) -> dict[str, Any]:
    location, country, latitude, longitude = place
    return {
        "project_id": project_id,
        "name": name,
        "type": kind,
        "location": location,
        "description": about[0],
        "about": about,
        "country_code": country,
        "organization": organization,
        "sdgs": [_sdg(n) for n in sdgs],
        "image_urls": [f"{_IMAGES}/{project_id}-{i}.jpg" for i in (1, 2)],
        "latitude": latitude,
        "longitude": longitude,
        "available": available,
    }


_CATALOGUE = [
    _project(
        "sbx-trees-madagascar",
        "Mangrove restoration in Mahajanga",
        "trees",
        ("Mahajanga, Madagascar", "MG", -15.7167, 46.3167),
        "Sandbox Forest Partners",
        [
            "Mangrove seedlings planted along the estuaries of north-west Madagascar.",
            "Villagers are paid to raise, plant and guard the seedlings.",
        ],
        (13, 14, 15, 8),
    ),
    _project(
        "sbx-trees-kenya",
        "Agroforestry on Mount Kenya's slopes",
        "trees",
        ("Nyeri County, Kenya", "KE", -0.4201, 36.9476),
        "Sandbox Forest Partners",
        [
            "Fruit and native trees planted with smallholder farmers.",
            "Shade trees protect the soil and give the farms a second harvest.",
        ],
        (13, 15, 8),
    ),
    _project(
        "sbx-ocean-bali",
        "River barriers and beach cleanups in Bali",
        "ocean",
        ("Denpasar, Indonesia", "ID", -8.6705, 115.2126),
        "Sandbox Ocean Works",
        [
            "Plastic caught in rivers before it reaches the sea, weighed and recycled.",
            "Local crews empty the barriers daily and sort what they collect.",
        ],
        (14, 6, 8),
    ),
    _project(
        "sbx-ocean-haiti",
        "Coastal plastic collection in northern Haiti",
        "ocean",
        ("Cap-Haïtien, Haiti", "HT", 19.7578, -72.2043),
        "Sandbox Ocean Works",
        [
            "Collectors are paid per pound of plastic brought to local collection points.",
            "The plastic is baled and sold to recyclers.",
        ],
        (14, 8),
        available=False,
    ),
    _project(
        "sbx-carbon-brazil",
        "Forest protection in the Brazilian Amazon",
        "carbon",
        ("Pará, Brazil", "BR", -3.4168, -52.2165),
        "Sandbox Carbon Trust",
        [
            "Standing forest protected from clearing, with its carbon measured every year.",
            "Rangers and satellite images watch the project's boundary.",
        ],
        (13, 15),
    ),
    _project(
        "sbx-coral-keys",
        "Coral nurseries of the Florida Keys",
        "coral",
        ("Key Largo, United States", "US", 25.0865, -80.4473),
        "Sandbox Reef Lab",
        [
            "Coral fragments grown in nurseries and planted back onto the reef.",
            "Divers monitor each planted colony for two years.",
        ],
        (14, 13),
    ),
]
_BY_ID = {p["project_id"]: p for p in _CATALOGUE}
_TYPES = tuple(dict.fromkeys(p["type"] for p in _CATALOGUE))


def _locale(params: Mapping[str, list[str]]) -> None:
    # Accepted, as the API does; the sandbox's catalogue is in English whatever the locale.
    locale = params.get("locale", ["en"])[0]
    if locale not in _LOCALES:
        msg = f"Invalid locale {locale!r}; accepted: {', '.join(_LOCALES)}"
        raise bad(msg)


def projects(call: Call) -> Reply:
    """``GET /v1/projects``: every project, or those of one ``type``."""
    check_params(call.params, ("type", "locale"))
    _locale(call.params)
    kind = call.params.get("type", [None])[0]
    if kind is not None and kind not in _TYPES:
        msg = f"Invalid type {kind!r}; accepted: {', '.join(_TYPES)}"
        raise bad(msg)
    return json_reply({"projects": [p for p in _CATALOGUE if kind in (None, p["type"])]})


def project(call: Call) -> Reply:
    """``GET /v1/projects/{id}``: one project."""
    check_params(call.params, ("locale",))
    _locale(call.params)
    (project_id,) = call.path_args
    found = _BY_ID.get(project_id)
    if found is None:
        msg = f"No project {project_id!r}; projects: {', '.join(_BY_ID)}"
        raise not_found(msg)
    return json_reply(found)


def project_for(record: Mapping[str, Any], tracking_id: str) -> dict[str, Any] | None:
    """The available project an impact goes to: one of its type's, picked by its tracking id."""
    kind = next((PROJECT_TYPES[k] for k in PROJECT_TYPES if k in record), None)
    options = [p for p in _CATALOGUE if p["type"] == kind and p["available"]]
    if not options:
        return None
    digest = int.from_bytes(hashlib.sha256(tracking_id.encode()).digest()[:4])
    return options[digest % len(options)]
