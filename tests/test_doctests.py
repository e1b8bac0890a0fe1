"""The docstring examples of the package run, on every backend."""

import doctest
import importlib
import pkgutil

import keras
import numpy as np
import pytest

import keras_transformer

OPTIONAL = {"keras_transformer.ctranslate2"}  # needs the ctranslate2 extra
NOT_IMPORTED = {"keras_transformer.__main__"}  # runs the command line


def modules():
    names = [keras_transformer.__name__]
    for info in pkgutil.walk_packages(keras_transformer.__path__, "keras_transformer."):
        if info.name not in NOT_IMPORTED and not info.name.startswith(tuple(OPTIONAL)):
            names.append(info.name)
    return names


@pytest.mark.parametrize("name", modules())
def test_docstring_examples(name):
    module = importlib.import_module(name)
    keras.utils.set_random_seed(0)
    globs = {"keras": keras, "np": np, **vars(module)}
    failed, _ = doctest.testmod(module, globs=globs, optionflags=doctest.ELLIPSIS, verbose=False)
    assert failed == 0, f"{failed} docstring example(s) of {name} failed (printed above)"


def test_the_examples_are_found():
    finder = doctest.DocTestFinder()
    found = [
        test
        for name in modules()
        for test in finder.find(importlib.import_module(name))
        if test.examples
    ]
    assert len(found) >= 8
