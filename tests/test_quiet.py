"""`import hbnn_larq` silences larq's false alarms about its quantizers, and only those."""

import logging

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

import hbnn_larq
from hbnn_larq.precision import policy_scope
from tests.helpers import random_data, tiny_model

STARVED = "may result in starved weights"
OURS = [hbnn_larq.HyperbolicSign, hbnn_larq.IRNetSign, hbnn_larq.ReCUSign, hbnn_larq.NormalizedSign,
        lambda: hbnn_larq.HyperbolicSign(base="ste_sign"), lambda: "hyperbolic_sign", lambda: "normalized_sign"]


def starved_warnings(caplog, make_layer) -> list[str]:
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        make_layer()
    return [r.getMessage() for r in caplog.records if STARVED in r.getMessage()]


@pytest.mark.parametrize("quantizer", OURS, ids=["HyperbolicSign", "IRNetSign", "ReCUSign", "NormalizedSign",
                                                "HyperbolicSign-ste_base", "hyperbolic_sign", "normalized_sign"])
def test_no_starved_weights_warning_for_this_packages_quantizers(caplog, quantizer):
    assert not starved_warnings(caplog, lambda: lq.layers.QuantConv2D(4, 3, kernel_quantizer=quantizer()))
    assert not starved_warnings(caplog, lambda: lq.layers.QuantDense(4, kernel_quantizer=quantizer()))
    assert not starved_warnings(caplog, lambda: lq.layers.QuantDepthwiseConv2D(3, depthwise_quantizer=quantizer()))


def test_starved_weights_warning_kept_for_an_unclipped_ste_sign(caplog):
    assert len(starved_warnings(caplog, lambda: lq.layers.QuantConv2D(4, 3, kernel_quantizer="ste_sign"))) == 1
    assert len(starved_warnings(caplog, lambda: lq.layers.QuantDense(4, kernel_quantizer=lq.quantizers.SteSign()))) == 1
    separable = lambda: lq.layers.QuantSeparableConv2D(  # noqa: E731
        4, 3, depthwise_quantizer=hbnn_larq.HyperbolicSign(), pointwise_quantizer="ste_sign")
    assert ["pointwise" in message for message in starved_warnings(caplog, separable)] == [True]
    clipped = lambda: lq.layers.QuantConv2D(4, 3, kernel_quantizer="ste_sign", kernel_constraint="weight_clip")  # noqa: E731
    assert not starved_warnings(caplog, clipped)


def test_filter_is_installed_once():
    logger = logging.getLogger("larq.layers_base")
    count = len(logger.filters)
    hbnn_larq.silence_false_alarms()
    assert len(logger.filters) == count


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_traced_training_of_larq_kernels_asks_for_no_autograph_bug_report(caplog, policy):
    # Every Keras optimizer's update of a larq kernel calls `QuantizedVariable.from_variable`
    # inside the traced train step, and under a mixed policy tf-keras' `create_autocast_variable`;
    # AutoGraph cannot convert either and used to say so.
    with policy_scope(policy):
        model = tiny_model("ste_sign", channels=(4,))
    model.compile(tf.keras.optimizers.Adam(), tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = random_data(8)
    with caplog.at_level(logging.WARNING):
        model.fit(x, y, epochs=1, verbose=0)
    assert not [r for r in caplog.records if "AutoGraph could not transform" in r.getMessage()]
    assert np.isfinite(model.evaluate(x, y, verbose=0))


def test_conversion_warns_about_no_uncompiled_model(caplog):
    model = tiny_model(hbnn_larq.HyperbolicSign, channels=(8,))
    with caplog.at_level(logging.WARNING):
        hbnn_larq.convert_keras_model(model)
    assert not [r for r in caplog.records if "compiled metrics have yet to be built" in r.getMessage()]
    assert not model._is_compiled  # the caller's model is left as it was
