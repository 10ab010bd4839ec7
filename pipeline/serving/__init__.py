"""What ships and serves it: edge bundles and their torch-free runner, the format a bundle ships in, the
string-in tokenizer, OVMS and Triton model repositories, and the KServe v2 server."""
