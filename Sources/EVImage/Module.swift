import EVTensor
