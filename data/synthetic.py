"""The project's built-in example data set: a made-up film catalogue.

    python -m data.synthetic --output data/example --seed 0

Writes ``interactions.csv`` (user_id,item_id,rating,timestamp),
``items.csv`` (item_id,title,year,genres with genres joined by ``|``) and
``users.csv`` (user_id,age_group,country). Everything is seeded, so the
same arguments give byte-identical files.

How the log is made, so that a model has something to learn:

- 18 genres, each with a random unit direction in a small latent space;
  an item's latent vector is the mean of its genres' directions plus noise.
- Each user likes a few genres (a sparse Dirichlet mixture) and has a
  latent vector built from them plus noise; the age group leans on the
  favourite genre, so user features carry signal too.
- Each interaction picks an item by a softmax over taste (user vector dot
  item vector) plus log popularity; popularity is Zipf-like over items.
- Two years of time with drift: item popularity trends up or down, user
  tastes move along a personal direction, and a fifth of the catalogue is
  released during the log (fresh items get a boost that fades).
- Interactions per user are heavy-tailed (log-normal), at least 5; a user
  never picks the same item twice. About 3% of items are never picked
  (cold items).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

logger = logging.getLogger(__name__)

GENRES = (
    "Action", "Adventure", "Animation", "Comedy", "Crime", "Documentary",
    "Drama", "Family", "Fantasy", "Horror", "Musical", "Mystery", "Romance",
    "Science Fiction", "Thriller", "War", "Western", "Noir",
)  # fmt: skip

_ADJECTIVES = (
    "Silent", "Crimson", "Hollow", "Last", "Broken", "Golden", "Midnight",
    "Hidden", "Distant", "Burning", "Frozen", "Restless", "Electric",
    "Wandering", "Quiet", "Savage", "Paper", "Velvet", "Iron", "Lonely",
    "Bright", "Forgotten", "Endless", "Little", "Second", "Wild",
)  # fmt: skip
_NOUNS = (
    "Harbor", "Orchard", "Signal", "Kingdom", "Witness", "Lantern", "River",
    "Frontier", "Garden", "Engine", "Mirror", "Summer", "Canyon", "Letter",
    "Station", "Promise", "Shadow", "Island", "Carnival", "Compass",
    "Tide", "Winter", "Empire", "Stranger", "Highway", "Bridge",
)  # fmt: skip
_PLACES = (
    "Velmora", "Kestrel Bay", "Ashford", "Port Lune", "Marrowdale",
    "Orvieto Flats", "Thistlewick", "Caldera Springs", "North Fenwick",
    "Saltmere", "Brackenridge", "Ilvane",
)  # fmt: skip
_AGE_GROUPS = ("18-24", "25-34", "35-44", "45-54", "55+")
_COUNTRIES = ("US", "GB", "DE", "FR", "BR", "IN", "JP", "CA", "ES", "AU")

START = 1_640_995_200  # 2022-01-01T00:00:00Z
SPAN = 2 * 365 * 86400
DIM = 16
MIN_PER_USER = 5
COLD_FRACTION = 0.03
NEW_FRACTION = 0.2


def _titles(rng: np.random.Generator, n: int) -> np.ndarray:
    """Made-up titles from word lists, unique by adding a sequel number."""
    adjective = np.asarray(_ADJECTIVES)[rng.integers(len(_ADJECTIVES), size=n)]
    noun = np.asarray(_NOUNS)[rng.integers(len(_NOUNS), size=n)]
    place = np.asarray(_PLACES)[rng.integers(len(_PLACES), size=n)]
    pattern = rng.integers(4, size=n)
    titles = np.where(
        pattern == 0,
        np.char.add("The ", np.char.add(adjective, np.char.add(" ", noun))),
        np.where(
            pattern == 1,
            np.char.add(noun, np.char.add(" of ", place)),
            np.where(
                pattern == 2,
                np.char.add(adjective, np.char.add(" ", noun)),
                np.char.add("Return to ", place),
            ),
        ),
    ).astype(object)

    # Repeated titles become sequels: "X", "X 2", "X 3", ...
    _, inverse = np.unique(titles, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    rank = np.empty(n, dtype=np.int64)
    group_start = np.searchsorted(inverse[order], inverse[order])
    rank[order] = np.arange(n) - group_start
    sequel = np.where(rank > 0, np.char.add(" ", (rank + 1).astype(str)), "")
    return np.char.add(titles.astype(str), sequel).astype(object)


def _items(rng: np.random.Generator, num_items: int, directions: np.ndarray):
    """Genres, latent vectors, popularity and release times of items."""
    num_genres = len(GENRES)

    # One to three genres each; the first is the main one.
    count = rng.choice([1, 2, 3], size=num_items, p=[0.45, 0.4, 0.15])
    main = rng.choice(num_genres, size=num_items, p=_genre_shares(rng))
    extra = rng.integers(num_genres, size=(num_items, 2))
    member = np.zeros((num_items, num_genres), dtype=bool)
    member[np.arange(num_items), main] = True
    for k in range(2):
        rows = count > k + 1
        member[np.flatnonzero(rows), extra[rows, k]] = True
    vectors = member @ directions / member.sum(1, keepdims=True)
    vectors += 0.35 * rng.normal(size=vectors.shape) / np.sqrt(DIM)

    # Zipf-like popularity over a random ranking, trending over time.
    ranks = rng.permutation(num_items) + 1
    log_popularity = -1.0 * np.log(ranks)
    trend = rng.normal(scale=0.8, size=num_items)

    # Most items exist from the start; a fifth is released during the log.
    released = np.full(num_items, START - 365 * 86400, dtype=np.int64)
    new = rng.random(num_items) < NEW_FRACTION
    released[new] = START + rng.integers(0, int(SPAN * 0.9), size=new.sum())
    year = np.where(
        new,
        2022 + (released - START) // (365 * 86400),
        rng.integers(1950, 2022, size=num_items),
    )
    return (
        member,
        vectors.astype(np.float32),
        log_popularity.astype(np.float32),
        trend.astype(np.float32),
        released,
        year,
    )


def _genre_shares(rng: np.random.Generator) -> np.ndarray:
    shares = rng.dirichlet(np.full(len(GENRES), 2.0))
    return shares / shares.sum()


PICKS_PER_ROUND = 4


def _pick_items(
    rng: np.random.Generator,
    *,
    counts: np.ndarray,
    offsets: np.ndarray,
    times: np.ndarray,
    user_vectors: tuple[np.ndarray, np.ndarray],
    item_vectors: np.ndarray,
    popularity: tuple[np.ndarray, np.ndarray],
    released: np.ndarray,
    cold: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Chooses the item of every interaction, users' picks in time order.

    Round k draws each user's picks k*P .. k*P+P-1 (P = `PICKS_PER_ROUND`)
    at the time of the first of them, by Gumbel top-P sampling (sampling
    without replacement from the softmax). Items a user already has are
    masked out, so nobody picks an item twice.

    Returns:
      Item index and taste score of each interaction, aligned with `times`.
    """
    base, drift = user_vectors
    log_pop, trend = popularity
    num_users, num_items = len(counts), len(item_vectors)
    new = released >= START
    seen = np.zeros((num_users, num_items), dtype=bool)
    seen[:, cold] = True
    items_of = np.empty(len(times), dtype=np.int64)
    affinity = np.empty(len(times), dtype=np.float32)
    per_round = PICKS_PER_ROUND
    for k in range(0, int(counts.max()), per_round):
        users = np.flatnonzero(counts > k)
        when = times[offsets[users] + k]
        phase = ((when - START) / SPAN).astype(np.float32)[:, None]
        taste = (base[users] + phase * drift[users]) @ item_vectors.T
        logits = 6.0 * taste + log_pop + trend * (phase - 0.5)

        # Only items released during the log need the freshness terms.
        age = (when[:, None] - released[None, new]) / 86400.0
        boost = np.where(age < 0, -np.inf, 1.5 * np.exp(-np.abs(age) / 60.0))
        logits[:, new] += boost.astype(np.float32)
        logits[seen[users]] = -np.inf

        # Gumbel top-P: perturb, then take the P best in order.
        noise = rng.standard_exponential(logits.shape, dtype=np.float32)
        scores = logits - np.log(np.maximum(noise, np.float32(1e-30)))
        top = np.argpartition(-scores, per_round - 1, axis=1)[:, :per_round]
        rank = np.argsort(-np.take_along_axis(scores, top, 1), axis=1)
        top = np.take_along_axis(top, rank, 1)
        for j in range(per_round):
            take = counts[users] > k + j
            rows = np.flatnonzero(take)
            chosen = top[rows, j]
            slots = offsets[users[rows]] + k + j
            items_of[slots] = chosen
            affinity[slots] = taste[rows, chosen]
            seen[users[rows], chosen] = True
    return items_of, affinity


def generate(
    out_dir: str | Path,
    *,
    seed: int = 0,
    num_users: int = 1500,
    num_items: int = 1200,
    mean_interactions: int = 40,
) -> dict[str, Path]:
    """Writes the synthetic data set as three CSV files.

    Args:
      out_dir: Folder to write into (created if missing).
      seed: Seed of every random choice.
      num_users: Number of users.
      num_items: Number of items, cold ones included.
      mean_interactions: Rough mean of interactions per user.

    Returns:
      Paths keyed ``interactions``, ``items`` and ``users``.
    """
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    num_genres = len(GENRES)
    directions = rng.normal(size=(num_genres, DIM)).astype(np.float32)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)

    # Items.
    member, item_vectors, log_pop, trend, released, year = _items(
        rng, num_items, directions
    )
    cold = rng.random(num_items) < COLD_FRACTION
    titles = _titles(rng, num_items)

    # Users: a sparse mixture over genres, a latent vector and a drift.
    tastes = rng.dirichlet(np.full(num_genres, 0.12), size=num_users)
    favourite = tastes.argmax(1)
    user_vectors = (tastes @ directions).astype(np.float32)
    user_vectors /= np.linalg.norm(user_vectors, axis=1, keepdims=True)
    user_vectors += 0.3 * rng.normal(size=user_vectors.shape) / np.sqrt(DIM)
    drift = 0.5 * rng.normal(size=user_vectors.shape) / np.sqrt(DIM)
    drift = drift.astype(np.float32)
    user_vectors = user_vectors.astype(np.float32)
    age_group = (favourite * 7 + rng.integers(0, 2, size=num_users)) % len(
        _AGE_GROUPS
    )
    country = rng.integers(len(_COUNTRIES), size=num_users)

    # Heavy-tailed activity, capped so a user cannot exhaust the catalogue.
    counts = MIN_PER_USER + np.floor(
        rng.lognormal(np.log(mean_interactions) - 0.6, 1.0, size=num_users)
    ).astype(np.int64)
    counts = np.minimum(counts, num_items // 3)
    first = START + rng.integers(0, int(SPAN * 0.85), size=num_users)
    length = np.minimum(
        rng.exponential(SPAN * 0.35, size=num_users), START + SPAN - first
    )
    user_of = np.repeat(np.arange(num_users), counts)
    times = first[user_of] + (
        rng.random(len(user_of)) * length[user_of]
    ).astype(np.int64)
    order = np.lexsort((times, user_of))
    user_of, times = user_of[order], times[order]
    offsets = np.cumsum(counts) - counts
    items_of, affinity = _pick_items(
        rng,
        counts=counts,
        offsets=offsets,
        times=times,
        user_vectors=(user_vectors, drift),
        item_vectors=item_vectors,
        popularity=(log_pop, trend),
        released=released,
        cold=cold,
    )

    # Ratings follow affinity with noise, on a 1..5 scale.
    z = (affinity - affinity.mean()) / (affinity.std() + 1e-9)
    ratings = np.clip(
        np.rint(3.4 + 1.0 * z + rng.normal(scale=0.7, size=len(z))), 1, 5
    ).astype(np.int64)

    # Write in time order, as a real log would be.
    log_order = np.argsort(times, kind="stable")
    paths = {
        "interactions": out / "interactions.csv",
        "items": out / "items.csv",
        "users": out / "users.csv",
    }
    pa_csv.write_csv(
        pa.table(
            {
                "user_id": user_of[log_order] + 1,
                "item_id": items_of[log_order] + 1,
                "rating": ratings[log_order],
                "timestamp": times[log_order],
            }
        ),
        paths["interactions"],
    )
    genre_names = np.asarray(GENRES, dtype=object)
    genres = ["|".join(genre_names[row]) for row in member]
    pa_csv.write_csv(
        pa.table(
            {
                "item_id": np.arange(1, num_items + 1),
                "title": pa.array(titles, pa.string()),
                "year": year,
                "genres": pa.array(genres, pa.string()),
            }
        ),
        paths["items"],
    )
    pa_csv.write_csv(
        pa.table(
            {
                "user_id": np.arange(1, num_users + 1),
                "age_group": pa.array(
                    np.asarray(_AGE_GROUPS, dtype=object)[age_group],
                    pa.string(),
                ),
                "country": pa.array(
                    np.asarray(_COUNTRIES, dtype=object)[country], pa.string()
                ),
            }
        ),
        paths["users"],
    )
    logger.info(
        "Wrote %d interactions, %d items, %d users to %s.",
        len(user_of),
        num_items,
        num_users,
        out,
    )
    return paths


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m data.synthetic --output DIR``."""
    parser = argparse.ArgumentParser(
        description="Write the synthetic example data set as CSV files."
    )
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--users", type=int, default=1500)
    parser.add_argument("--items", type=int, default=1200)
    parser.add_argument("--mean-interactions", type=int, default=40)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    paths = generate(
        args.output,
        seed=args.seed,
        num_users=args.users,
        num_items=args.items,
        mean_interactions=args.mean_interactions,
    )
    for name, path in paths.items():
        logger.info("%s: %s", name, path)


if __name__ == "__main__":
    main()
