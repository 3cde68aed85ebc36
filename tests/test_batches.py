"""network/training/batches.py: the training batches that train_model feeds model.fit on
TensorFlow, and that Keras prefetches itself (tf.data's autotuning off)."""

import numpy as np

from network.training.batches import ShuffledBatches


def epoch_of(batches):
    return [batches[i] for i in range(len(batches))]


def test_an_epoch_is_every_image_once_with_its_label_in_a_new_order_each_epoch():
    images = np.arange(50 * 2).reshape(50, 2)
    labels = np.arange(50) * 10
    batches = ShuffledBatches(images, labels, 16, seed=3)
    assert len(batches) == 4 and batches.workers > 1  # Keras prefetches, autotuning off
    first = epoch_of(batches)
    assert [len(y) for _, y in first] == [16, 16, 16, 2]
    for x, y in first:  # each image travels with its own label
        np.testing.assert_array_equal(x[:, 0] // 2 * 10, y)
    order = np.concatenate([y for _, y in first]) // 10
    assert sorted(order) == list(range(50)) and list(order) != list(range(50))
    batches.on_epoch_end()
    again = np.concatenate([y for _, y in epoch_of(batches)]) // 10
    assert sorted(again) == list(range(50)) and list(again) != list(order)
    # the same seed, the same orders
    np.testing.assert_array_equal(np.concatenate([y for _, y in epoch_of(
        ShuffledBatches(images, labels, 16, seed=3))]) // 10, order)


def test_train_model_feeds_fit_such_batches_on_tensorflow(monkeypatch, tmp_path):
    import keras

    from network import train_model

    fed = {}

    class Model:
        inputs = []

        def fit(self, x, y=None, batch_size=None, **kwargs):
            fed.update(x=x, y=y, batch_size=batch_size)

    monkeypatch.setattr(keras.backend, "backend", lambda: "tensorflow")
    monkeypatch.setattr("network.model_utils.model_images", lambda model, images: images)
    run = train_model.Run.from_args(train_model.parse_args(["--recipe", "cpu", "--width",
                                                            "0.25", "--seed", "5"]))
    train = (np.zeros((10, 32, 32, 3), np.uint8), np.arange(10))
    val = (np.zeros((0, 32, 32, 3), np.uint8), np.zeros(0, int))
    train_model.fit(Model(), run, train, val, [], 0, tmp_path, None)
    assert isinstance(fed["x"], ShuffledBatches) and fed["y"] is None
    assert fed["x"].batch_size == run.recipe.batch_size and fed["batch_size"] is None
    assert fed["x"].labels.shape == (10, 100)  # one-hot, as fit's arrays were
