"""Generated arithmetic word problems with exact worked solutions (the embedded "synthetic" role).

Every problem is built backwards from integer unknowns, so each step's arithmetic is exact and
the final line is always `Answer: <integer>`. Deterministic for a given `random.Random` seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

NAMES = ("Ada", "Bo", "Chen", "Dara", "Eli", "Farah", "Goran", "Hana", "Ivo", "Jun", "Kemal",
         "Lena", "Mateo", "Nia", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tomas")
ITEMS = (("notebook", "notebooks"), ("pencil", "pencils"), ("apple", "apples"),
         ("ticket", "tickets"), ("book", "books"), ("cup", "cups"), ("lamp", "lamps"))


def _shopping(r: random.Random) -> tuple[str, list[str], int]:
    name = r.choice(NAMES)
    (_, many), (_, many2) = r.sample(ITEMS, 2)
    a, p, b, q = r.randint(2, 9), r.randint(2, 15), r.randint(2, 9), r.randint(2, 15)
    total = a * p + b * q
    bill = (total // 50 + 1) * 50
    question = (f"{name} buys {a} {many} at ${p} each and {b} {many2} at ${q} each, paying with "
                f"a ${bill} bill. How much change does {name} get?")
    steps = [f"The {many} cost {a} x ${p} = ${a * p}.", f"The {many2} cost {b} x ${q} = ${b * q}.",
             f"Together: ${a * p} + ${b * q} = ${total}.",
             f"Change: ${bill} - ${total} = ${bill - total}."]
    return question, steps, bill - total


def _travel(r: random.Random) -> tuple[str, list[str], int]:
    v, t1, w, t2 = r.randint(30, 120), r.randint(1, 6), r.randint(30, 120), r.randint(1, 6)
    question = (f"A train runs at {v} km/h for {t1} hours and then at {w} km/h for {t2} hours. "
                "How many kilometres does it cover in total?")
    steps = [f"First part: {v} x {t1} = {v * t1} km.", f"Second part: {w} x {t2} = {w * t2} km.",
             f"Total: {v * t1} + {w * t2} = {v * t1 + w * t2} km."]
    return question, steps, v * t1 + w * t2


def _sharing(r: random.Random) -> tuple[str, list[str], int]:
    n, each = r.randint(3, 12), r.randint(2, 20)
    left = r.randint(0, n - 1)
    total = n * each + left
    question = (f"{total} marbles are shared equally among {n} children, and the rest are kept "
                "in a jar. How many marbles does each child get?")
    steps = [f"{total} / {n} = {each} remainder {left}, since {n} x {each} = {n * each} and "
             f"{total} - {n * each} = {left}.", f"Each child gets {each}; {left} stay in the jar."]
    return question, steps, each


def _ages(r: random.Random) -> tuple[str, list[str], int]:
    b, k, y = r.randint(2, 15), r.randint(2, 5), r.randint(1, 10)
    s = b + k * b + 2 * y
    name1, name2 = r.sample(NAMES, 2)
    question = (f"{name1} is {k} times as old as {name2}. In {y} years their ages will add up to "
                f"{s}. How old is {name2} now?")
    steps = [f"Let {name2}'s age be x, so {name1} is {k}x.",
             f"In {y} years: (x + {y}) + ({k}x + {y}) = {s}, so {k + 1}x + {2 * y} = {s}.",
             f"{k + 1}x = {s} - {2 * y} = {s - 2 * y}.", f"x = {s - 2 * y} / {k + 1} = {b}."]
    return question, steps, b


def _path_area(r: random.Random) -> tuple[str, list[str], int]:
    length, width, p = r.randint(5, 40), r.randint(3, 30), r.randint(1, 4)
    outer = (length + 2 * p) * (width + 2 * p)
    question = (f"A rectangular garden is {length} m long and {width} m wide. A path {p} m wide "
                "runs all around it. What is the area of the path in square metres?")
    steps = [f"With the path: ({length} + 2 x {p}) x ({width} + 2 x {p}) = "
             f"{length + 2 * p} x {width + 2 * p} = {outer} m^2.",
             f"Garden: {length} x {width} = {length * width} m^2.",
             f"Path: {outer} - {length * width} = {outer - length * width} m^2."]
    return question, steps, outer - length * width


def _machines(r: random.Random) -> tuple[str, list[str], int]:
    rate, k, hours = r.randint(5, 60), r.randint(2, 8), r.randint(2, 12)
    parts = rate * k * hours
    question = (f"One machine makes {rate} parts per hour. How many hours do {k} such machines "
                f"need to make {parts} parts?")
    steps = [f"Together they make {k} x {rate} = {k * rate} parts per hour.",
             f"Hours: {parts} / {k * rate} = {hours}."]
    return question, steps, hours


def _savings(r: random.Random) -> tuple[str, list[str], int]:
    name = r.choice(NAMES)
    have, per_week, price = r.randint(0, 50), r.randint(5, 25), r.randint(80, 400)
    need = price - have
    weeks = -(-need // per_week)
    question = (f"{name} has ${have} and saves ${per_week} each week. A bike costs ${price}. "
                f"After how many weeks can {name} first afford it?")
    steps = [f"Still needed: ${price} - ${have} = ${need}.",
             f"{need} / {per_week} = {need / per_week:.2f}, so round up to {weeks} weeks.",
             f"Check: ${have} + {weeks} x ${per_week} = ${have + weeks * per_week} >= ${price}."]
    return question, steps, weeks


def _equation(r: random.Random) -> tuple[str, list[str], int]:
    a, x, b = r.randint(2, 12), r.randint(-20, 30), r.randint(-50, 50)
    c = a * x + b
    sign = "+" if b >= 0 else "-"
    question = f"Solve for x: {a}x {sign} {abs(b)} = {c}."
    move = f"Subtract {b} from" if b >= 0 else f"Add {-b} to"
    steps = [f"{move} both sides: {a}x = {c - b}.",
             f"Divide by {a}: x = {c - b} / {a} = {x}."]
    return question, steps, x


def _recipe(r: random.Random) -> tuple[str, list[str], int]:
    grams, batch, batches = r.choice((125, 200, 250, 400, 500)), r.randint(6, 24), r.randint(2, 16)
    cookies = batch * batches
    total = grams * batches
    question = (f"A recipe uses {grams} g of flour for {batch} cookies. How many grams of flour "
                f"are needed for {cookies} cookies?")
    steps = [f"{cookies} / {batch} = {batches} batches.",
             f"{batches} x {grams} g = {total} g ({total / 1000:g} kg)."]
    return question, steps, total


TEMPLATES: tuple[Callable[[random.Random], tuple[str, list[str], int]], ...] = (
    _shopping, _travel, _sharing, _ages, _path_area, _machines, _savings, _equation, _recipe)


def word_problem(r: random.Random) -> str:
    question, steps, answer = r.choice(TEMPLATES)(r)
    lines = [f"Problem: {question}", "", "Solution:"]
    lines += [f"Step {i}: {s}" for i, s in enumerate(steps, 1)]
    lines.append(f"Answer: {answer}")
    return "\n".join(lines)


def word_problems(seed: int = 0) -> Iterator[str]:
    """An endless deterministic stream of problems with worked solutions."""
    r = random.Random(seed)
    while True:
        yield word_problem(r)
