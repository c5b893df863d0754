"""Realistic sample records for the demo's datasets, as JSON a provider posts to the ingest endpoint.

Hangzhou districts, Zhejiang plates, mainland mobile numbers, unified social credit codes and resident
identity numbers of the right shapes (made up, with a seeded random generator so runs repeat).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

DISTRICTS = ("Xihu", "Shangcheng", "Gongshu", "Binjiang", "Xiaoshan", "Yuhang")
PLATE_LETTERS = "ABCDEFGHJK"
PLATE_TAIL = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
MOBILE_PREFIXES = ("130", "133", "135", "138", "139", "150", "158", "177", "186", "189")
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN_NAMES = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚"
TRADE_NAMES = ("云帆", "启明", "恒信", "之江", "钱塘", "西子", "天目", "新安", "栖霞", "望湖")
INDUSTRIES = (("I65", "科技"), ("F51", "贸易"), ("E48", "建设"), ("G54", "物流"), ("C39", "电子"))
CREDIT_CODE_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"


def _timestamp(now: datetime) -> str:
    return now.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _mobile(rng: random.Random) -> str:
    return rng.choice(MOBILE_PREFIXES) + f"{rng.randrange(10**8):08d}"


def traffic_flow(rng: random.Random, number: int, now: datetime) -> dict[str, Any]:
    return {
        "record_id": f"tf-{now:%Y%m%d%H%M%S}-{number}",
        "checkpoint_id": f"cp-{rng.randrange(1, 60):02d}",
        "district": rng.choice(DISTRICTS),
        "plate_number": "浙" + rng.choice(PLATE_LETTERS) + "".join(rng.choices(PLATE_TAIL, k=5)),
        "vehicle_type": rng.choices(["PASSENGER_CAR", "BUS", "TRUCK", "MOTORCYCLE"], [80, 5, 12, 3])[0],
        "speed_kmh": round(rng.uniform(12, 95), 1),
        "lane": rng.randrange(1, 5),
        "direction": rng.choice(["NORTHBOUND", "SOUTHBOUND", "EASTBOUND", "WESTBOUND"]),
        "observed_at": _timestamp(now),
        "driver_phone": _mobile(rng) if rng.random() < 0.3 else None,
    }


def enterprise_registry(rng: random.Random, number: int, now: datetime) -> dict[str, Any]:
    code, industry = rng.choice(INDUSTRIES)
    birthday = date(1960, 1, 1) + timedelta(days=rng.randrange(365 * 40))
    return {
        "record_id": f"er-{now:%Y%m%d%H%M%S}-{number}",
        "credit_code": "91330" + "".join(rng.choices(CREDIT_CODE_CHARS, k=13)),
        "enterprise_name": f"杭州{rng.choice(TRADE_NAMES)}{industry}有限公司",
        "legal_representative": rng.choice(SURNAMES)
        + "".join(rng.choices(GIVEN_NAMES, k=rng.randrange(1, 3))),
        "legal_rep_id_number": f"3301{rng.randrange(10, 99)}{birthday:%Y%m%d}{rng.randrange(1000):03d}"
        + rng.choice("0123456789X"),
        "contact_phone": _mobile(rng),
        "registered_capital": f"{rng.randrange(10, 5000) * 10000}.00",
        "industry_code": code,
        "district": rng.choice(DISTRICTS),
        "status": rng.choices(["ACTIVE", "REVOKED", "CANCELLED", "MOVED_OUT"], [90, 3, 5, 2])[0],
        "established_on": (date(2000, 1, 1) + timedelta(days=rng.randrange(9000))).isoformat(),
        "updated_at": _timestamp(now),
    }


def air_quality(rng: random.Random, number: int, now: datetime) -> dict[str, Any]:
    pm25 = round(rng.uniform(8, 120), 1)
    return {
        "record_id": f"aq-{now:%Y%m%d%H%M%S}-{number}",
        "station_id": f"hz-{rng.randrange(1, 12):03d}",
        "district": rng.choice(DISTRICTS),
        "pm25": pm25,
        "pm10": round(pm25 * rng.uniform(1.2, 1.9), 1),
        "no2": round(rng.uniform(10, 70), 1),
        "o3": round(rng.uniform(20, 160), 1),
        "aqi": int(min(500, pm25 * 1.4 + rng.uniform(0, 20))),
        "observed_at": _timestamp(now),
        "station_manager_phone": _mobile(rng) if rng.random() < 0.5 else None,
    }


GENERATORS: dict[str, Callable[[random.Random, int, datetime], dict[str, Any]]] = {
    "traffic-flow": traffic_flow,
    "enterprise-registry": enterprise_registry,
    "air-quality": air_quality,
}
