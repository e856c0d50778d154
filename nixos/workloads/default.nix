# Workloads built by Nix: each is an OCI image from nixpkgs' dockerTools and the Kubernetes
# objects that run it. The stack's `flakefleet:workloads` lists which pools run which workload:
# their nodes preload the image (services.k3s.images, no registry), the control planes deploy
# the objects (services.k3s.manifests), in the same `pulumi up` and waves as the systems.
#
# A workload is `{ image; manifests = placement: [ objects ]; }`, where placement is
# { name, pools, gpuPools, replicas } from the stack. Add one: a file here and a line below.
{ pkgs, lib }:
{
  hello = import ./hello.nix { inherit pkgs lib; };
}
