"""Pulled pools (pools[].autoscaling): the signed pointer to a pool's system, the first-boot user
data of its instances, and the pointer's publication."""
