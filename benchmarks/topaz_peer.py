"""Topaz-3D's pretrained ``unet-3d-10a`` on one MRC volume: a benchmark peer, run with the
Python of a separate environment that has ``topaz-em`` (GPL-3; see requirements.txt). The
napari-nmsg package never imports this file or Topaz::

    /path/to/topaz-env/bin/python benchmarks/topaz_peer.py in.mrc out.mrc

topaz-em 0.3.20's ``topaz denoise3d -m unet-3d-10a`` cannot open its own packaged weights
(a resource path with ``..``), so this loads the same file by path with its 3D U-Net's
width (7) and applies Topaz's own denoiser to the whole volume at once (no patches: for
tomograms of this size that is both its best and its fastest setting).
"""

import sys
from pathlib import Path

import mrcfile
import numpy as np
import topaz
import torch
from topaz.denoise import Denoise3D
from topaz.denoising.models import load_model

WEIGHTS = Path(topaz.__file__).parent / "pretrained" / "denoise" / "unet-3d-10a-v0.2.4.sav"


def main(source: str, target: str) -> None:
    with mrcfile.open(source, permissive=True) as mrc:
        volume = np.asarray(mrc.data, dtype=np.float32)
    # Denoise3D accepts a model only as an exact nn.Module or nn.Sequential
    network = torch.nn.Sequential(load_model(str(WEIGHTS), base_kernel_width=7))
    denoiser = Denoise3D(network, use_cuda=False, dims=3)
    out = denoiser.denoise(volume, patch_size=0, verbose=False)
    with mrcfile.new(target, overwrite=True) as mrc:
        mrc.set_data(out.astype(np.float32))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
