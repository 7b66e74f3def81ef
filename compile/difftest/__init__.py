"""Differential testing of generated models on every target (the NNSmith idea, for int8
TFLite): ``python -m compile.difftest --n 500 --targets all``.

``spec``      random small models over the supported operators and their parameters, as JSON
``convert``   a spec -> tf_keras -> TensorFlow's converter -> an int8 ``.tflite``
``check``     one ``.tflite`` on the targets vs LiteRT's reference kernels, bit for bit
``campaign``  many seeds in parallel, failures shrunk to the smallest model failing alike
"""
