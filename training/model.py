"""The two-tower retrieval model: query tower, candidate tower, TFRS task.

Both towers end in an L2 normalisation, so the inner product of a query
embedding and a candidate embedding is their cosine similarity; that is
the score everything downstream ranks by.

Item codes follow `data.vocab`: 1-based, 0 is padding, codes above
``num_trained_items`` are cold items (in the item table, never in the
training log) whose id embedding is hidden so that they are placed by
their features alone.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from data.vocab import Encoder
from training.config import ModelConfig


def _constant_weight(layer, name: str, value: np.ndarray):
    """Stores a feature matrix in the layer so that SavedModels carry it."""
    return layer.add_weight(
        name=name,
        shape=value.shape,
        dtype=tf.as_dtype(value.dtype),
        initializer=tf.constant_initializer(value),
        trainable=False,
    )


def _init():
    """A new initializer for each table.

    An unseeded Keras initializer returns the same values on every call, so
    one instance shared by several tables would start them all alike (item
    code k, title token k and category k with one vector).
    """
    return tf.keras.initializers.TruncatedNormal(stddev=0.05)


def _trained_vectors(embedding, codes, num_trained_items: int):
    """Rows of `embedding` for trained item codes; zero for padding and cold.

    Args:
      embedding: Keras embedding of num_trained_items + 1 rows.
      codes: [...] item codes.
      num_trained_items: Codes above this are cold items (no id row).

    Returns:
      [..., d] vectors.
    """
    trained = (codes > 0) & (codes <= num_trained_items)
    vectors = embedding(tf.where(trained, codes, tf.zeros_like(codes)))
    return vectors * tf.cast(trained, vectors.dtype)[..., None]


def _masked_mean(vectors, codes):
    """Mean over the non-padding slots of [..., n, d] vectors."""
    mask = tf.cast(codes > 0, vectors.dtype)[..., None]
    total = tf.reduce_sum(vectors * mask, axis=-2)
    count = tf.reduce_sum(mask, axis=-2)
    return total / tf.maximum(count, 1.0)


def _mlp(hidden_units, output_dim: int, name: str):
    layers = [
        tf.keras.layers.Dense(units, activation="relu")
        for units in hidden_units
    ]
    layers.append(tf.keras.layers.Dense(output_dim))
    return tf.keras.Sequential(layers, name=name)


class CandidateTower(tf.keras.layers.Layer):
    """Item code -> L2-normalised candidate embedding.

    Concatenates the item-id embedding (hidden for cold items), the mean of
    the title's token embeddings, the mean of its category embeddings and
    a projection of its standardised numeric fields, then applies an MLP.

    Args:
      config: Model settings.
      encoder: Vocabularies and item feature matrices.
    """

    def __init__(self, config: ModelConfig, encoder: Encoder, **kwargs):
        super().__init__(**kwargs)
        self._config = config
        self.num_trained_items = encoder.num_trained_items
        features = encoder.item_features
        d = config.embedding_dim
        self.id_embedding = tf.keras.layers.Embedding(
            encoder.num_trained_items + 1, d, embeddings_initializer=_init()
        )

        use = config.use_item_features
        self.use_title = use and len(features.title_vocab) > 0
        self.use_categories = use and len(features.category_vocab) > 0
        self.use_numeric = use and features.numeric.shape[1] > 0
        self.has_features = (
            self.use_title or self.use_categories or self.use_numeric
        )
        if self.use_title:
            self.title_tokens = _constant_weight(
                self, "title_tokens", features.title_tokens
            )
            self.token_embedding = tf.keras.layers.Embedding(
                len(features.title_vocab) + 1, d, embeddings_initializer=_init()
            )
        if self.use_categories:
            self.categories = _constant_weight(
                self, "categories", features.categories
            )
            self.category_embedding = tf.keras.layers.Embedding(
                len(features.category_vocab) + 1,
                d,
                embeddings_initializer=_init(),
            )
        if self.use_numeric:
            numeric = np.concatenate(
                [features.numeric, features.numeric_missing], axis=1
            ).astype(np.float32)
            self.numeric = _constant_weight(self, "numeric", numeric)
            self.numeric_projection = tf.keras.layers.Dense(d)
        self.mlp = _mlp(config.hidden_units, config.output_dim, "candidate")

    def id_vectors(self, codes):
        """Id embeddings of [...] item codes; zero for padding and cold."""
        return _trained_vectors(
            self.id_embedding, codes, self.num_trained_items
        )

    def content_vectors(self, codes):
        """[..., d] sum of an item's title and category embeddings.

        Zero when the item has no features. Only the distinct codes of the
        input are embedded, which keeps long histories cheap.
        """
        shape = tf.shape(codes)
        unique, index = tf.unique(tf.reshape(codes, [-1]))
        total = tf.zeros([tf.size(unique), self._config.embedding_dim])
        if self.use_title:
            tokens = tf.gather(self.title_tokens, unique)
            total += _masked_mean(self.token_embedding(tokens), tokens)
        if self.use_categories:
            cats = tf.gather(self.categories, unique)
            total += _masked_mean(self.category_embedding(cats), cats)
        vectors = tf.gather(total, index)
        return tf.reshape(
            vectors, tf.concat([shape, [self._config.embedding_dim]], 0)
        )

    def call(self, codes, training=False):
        """Candidate embeddings.

        Args:
          codes: [B] item codes.
          training: Hides a share of id embeddings (features must carry).

        Returns:
          [B, output_dim] unit-length embeddings.
        """
        codes = tf.cast(codes, tf.int32)
        parts = [self.id_vectors(codes)]
        rate = self._config.candidate_id_dropout
        if training and rate > 0 and self.has_features:
            keep = tf.random.uniform(tf.shape(codes)) >= rate
            parts[0] *= tf.cast(keep, parts[0].dtype)[:, None]

        if self.use_title:
            tokens = tf.gather(self.title_tokens, codes)
            parts.append(_masked_mean(self.token_embedding(tokens), tokens))
        if self.use_categories:
            cats = tf.gather(self.categories, codes)
            parts.append(_masked_mean(self.category_embedding(cats), cats))
        if self.use_numeric:
            parts.append(
                self.numeric_projection(tf.gather(self.numeric, codes))
            )

        x = tf.concat(parts, axis=-1)
        return tf.math.l2_normalize(self.mlp(x), axis=-1)


class QueryTower(tf.keras.layers.Layer):
    """(user code, history item codes) -> L2-normalised query embedding.

    The history is pooled as the sum of its item embeddings divided by the
    square root of their count; a user unseen in training (user code 0),
    or one with new interactions, is served from the history alone.

    Args:
      config: Model settings.
      encoder: Vocabularies and user feature matrices.
      candidate_tower: Supplies the shared item-id table when
        ``share_item_embeddings`` is on.
    """

    def __init__(
        self,
        config: ModelConfig,
        encoder: Encoder,
        candidate_tower: CandidateTower,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._config = config
        self._candidate_tower = candidate_tower
        d = config.embedding_dim
        self.num_trained_items = encoder.num_trained_items
        if not config.share_item_embeddings:
            self.history_embedding = tf.keras.layers.Embedding(
                encoder.num_trained_items + 1, d, embeddings_initializer=_init()
            )
        self.use_user_id = config.use_user_id
        if self.use_user_id:
            self.user_embedding = tf.keras.layers.Embedding(
                encoder.num_users + 1, d, embeddings_initializer=_init()
            )
        user_features = encoder.user_features
        self.use_user_features = (
            config.use_user_features and user_features.values.shape[1] > 0
        )
        if self.use_user_features:
            self.user_values = _constant_weight(
                self, "user_values", user_features.values
            )
            self.feature_embeddings = [
                tf.keras.layers.Embedding(
                    len(vocab) + 1, d, embeddings_initializer=_init()
                )
                for vocab in user_features.vocabs
            ]
        self.mlp = _mlp(config.hidden_units, config.output_dim, "query")

    def _history_vectors(self, history):
        """Item vectors of the history and the mask of usable slots."""
        trained = (history > 0) & (history <= self.num_trained_items)
        if self._config.share_item_embeddings:
            vectors = self._candidate_tower.id_vectors(history)
        else:
            vectors = _trained_vectors(
                self.history_embedding, history, self.num_trained_items
            )
        tower = self._candidate_tower
        if self._config.history_features and tower.has_features:
            # cold items in a history count through their features
            vectors += tower.content_vectors(history)
            return vectors, tf.cast(history > 0, tf.float32)
        return vectors, tf.cast(trained, tf.float32)

    def call(self, user, history, training=False):
        """Query embeddings.

        Args:
          user: [B] user codes (0 for a user unknown to training).
          history: [B, L] item codes, 0 padded.
          training: Drops a share of history items per example.

        Returns:
          [B, output_dim] unit-length embeddings.
        """
        user = tf.cast(user, tf.int32)
        history = tf.cast(history, tf.int32)
        vectors, mask = self._history_vectors(history)
        rate = self._config.history_dropout
        if training and rate > 0:
            keep = tf.random.uniform(tf.shape(mask)) >= rate
            mask *= tf.cast(keep, mask.dtype)
        pooled = tf.reduce_sum(vectors * mask[..., None], axis=1)
        count = tf.reduce_sum(mask, axis=1, keepdims=True)
        parts = [pooled / tf.sqrt(tf.maximum(count, 1.0))]

        known = tf.cast(user > 0, tf.float32)[:, None]
        if self.use_user_id:
            parts.append(self.user_embedding(user) * known)
        if self.use_user_features:
            values = tf.gather(self.user_values, user)
            for j, embedding in enumerate(self.feature_embeddings):
                column = values[:, j]
                present = tf.cast(column > 0, tf.float32)[:, None]
                parts.append(embedding(column) * present)

        x = tf.concat(parts, axis=-1)
        return tf.math.l2_normalize(self.mlp(x), axis=-1)


def sampling_probabilities(item_codes: np.ndarray, num_items: int):
    """Share of training examples whose positive is each item code.

    Args:
      item_codes: [n] item codes of the training examples.
      num_items: Catalogue size; the result has num_items + 1 entries.

    Returns:
      [num_items + 1] probabilities; items never seen get the smallest
      observed probability so that their log stays finite.
    """
    counts = np.bincount(item_codes, minlength=num_items + 1)
    counts = counts[: num_items + 1].astype(np.float64)
    floor = counts[counts > 0].min() if (counts > 0).any() else 1.0
    probabilities = np.maximum(counts, floor) / max(counts.sum(), 1.0)
    return probabilities.astype(np.float32)


class TwoTowerModel(tfrs.Model):
    """In-batch softmax retrieval over the two towers.

    Args:
      config: Model settings.
      encoder: Vocabularies and feature matrices.
      item_probability: [num_items + 1] sampling probability per item code,
        used for the logQ correction.
    """

    def __init__(
        self,
        config: ModelConfig,
        encoder: Encoder,
        item_probability: np.ndarray,
    ):
        super().__init__()
        self.config = config
        self.candidate_tower = CandidateTower(config, encoder)
        self.query_tower = QueryTower(config, encoder, self.candidate_tower)
        self.item_probability = tf.constant(item_probability, tf.float32)
        self.loss_tracker = tf.keras.metrics.Mean(name="loss")
        self.task = tfrs.tasks.Retrieval(
            temperature=config.temperature,
            remove_accidental_hits=config.remove_accidental_hits,
        )

    @property
    def metrics(self):
        # Keras resets these at the start of every epoch
        return [self.loss_tracker]

    def train_step(self, features):
        """One optimiser step; reports the epoch's mean loss per example.

        TFRS sums the loss over the batch, and Keras would show the last
        batch's sum; the mean per example is comparable across batch sizes
        and epochs.
        """
        with tf.GradientTape() as tape:
            loss = self.compute_loss(features, training=True)
            total = loss + sum(self.losses)
        gradients = tape.gradient(total, self.trainable_variables)
        self.optimizer.apply_gradients(
            zip(gradients, self.trainable_variables, strict=True)
        )
        size = tf.cast(tf.shape(features["item"])[0], tf.float32)
        self.loss_tracker.update_state(loss / size, sample_weight=size)
        return {"loss": self.loss_tracker.result()}

    def compute_loss(self, features, training=False):
        query = self.query_tower(
            features["user"], features["history"], training=training
        )
        candidate = self.candidate_tower(features["item"], training=training)
        item = tf.cast(features["item"], tf.int32)
        probability = None
        if self.config.logq_correction:
            probability = tf.gather(self.item_probability, item)
        return self.task(
            query,
            candidate,
            candidate_sampling_probability=probability,
            candidate_ids=item,
            compute_metrics=False,
            compute_batch_metrics=False,
        )

    def candidate_embeddings(self, codes, batch_size: int = 8192):
        """[n, output_dim] numpy embeddings of item codes, in batches."""
        codes = np.asarray(codes, np.int32)
        out = [
            self.candidate_tower(codes[i : i + batch_size]).numpy()
            for i in range(0, len(codes), batch_size)
        ]
        if not out:
            return np.zeros((0, self.config.output_dim), np.float32)
        return np.concatenate(out)

    def query_embeddings(self, users, histories, batch_size: int = 4096):
        """[n, output_dim] numpy embeddings of users with their histories."""
        users = np.asarray(users, np.int32)
        histories = np.asarray(histories, np.int32)
        out = [
            self.query_tower(
                users[i : i + batch_size], histories[i : i + batch_size]
            ).numpy()
            for i in range(0, len(users), batch_size)
        ]
        if not out:
            return np.zeros((0, self.config.output_dim), np.float32)
        return np.concatenate(out)
