"""The shield: input filters and Monte Carlo dropout compiled into the int8 model.

filters.py        median / Gaussian / bit-depth TIR kernels with PyTorch references
philox.py         Philox-4x32-10, numpy and TIR
dropout.py        the stateless random-mask dropout kernel (int8 and float32)
config.py         ShieldConfig: filters, dropout sites, T set (compact string or TOML)
torch_dropout.py  the torch custom op that carries dropout sites through torch.export
insert_filter.py  InsertInputFilter: the filter chain in front of main
"""
