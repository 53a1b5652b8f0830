"""Differentiable ops, one Function per op, grouped by kind:

- elementwise: Add Sub Mul Div Pow Neg Exp Log Sqrt Abs Clamp Where
- activation:  Relu LeakyRelu Gelu Sigmoid Tanh Softmax LogSoftmax Dropout
- reduce:      Sum Mean Max Min (Amax/Amin)
- stats:       Var
- compare:     Compare (lt le gt ge eq ne) Cast ArgMax ArgMin   (no gradient)
- shape:       Reshape Permute Expand GetItem Cat Stack Clone
- linalg:      MatMul Linear
- loss:        MSELoss L1Loss BinaryCrossEntropy BinaryCrossEntropyWithLogits CrossEntropy NLLLoss KLDiv
- conv:        Conv2d MaxPool2d AvgPool2d AdaptiveAvgPool2d BatchNorm
- rnn:         RecurrentLayer (LSTM / GRU / RNN, one layer and direction) Embedding
"""
