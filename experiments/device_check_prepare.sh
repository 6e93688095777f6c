#!/usr/bin/env bash
# Gathers what experiments/device_check.py needs on a GPU machine that reaches no network, into
# .device/ (ignored by git) at the repository root, and prints the one command to run there:
#   .device/whl/  wheels (CPython 3.12, x86-64) of the packages the machine's image lacks (its image
#                 has jax with CUDA, flax, optax, orbax, chex, absl, etils, numpy, matplotlib, pillow)
#   .device/gl/   Debian's EGL/OpenGL loader libraries, for MuJoCo's MUJOCO_GL=egl
#   .device/mnist.npz  the MNIST cache experiments/train.py wrote ($AIR_JAX_DATA_DIR or ~/.cache/air_jax)
# Run it here (it downloads from PyPI and Debian), then hand the printed command to the machine,
# carrying .device.
set -euo pipefail
cd "$(dirname "$0")/.."
data_dir=${AIR_JAX_DATA_DIR:-$HOME/.cache/air_jax}
if [ ! -f "$data_dir/mnist.npz" ]; then
  echo "error: no mnist.npz in $data_dir: run experiments/train.py once (it caches MNIST) or set AIR_JAX_DATA_DIR" >&2
  exit 1
fi
rm -rf .device && mkdir -p .device/whl .device/gl
cp "$data_dir/mnist.npz" .device/
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .device/whl \
  ml_collections==1.1.0 tensorboardX==2.6.5 mujoco==4.0.0 mujoco-core==4.0.0 mujoco-studio==4.0.0 glfw pyopengl
lists=$(mktemp -d)
apt=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 "-oDir::State::Lists=$lists")
mkdir -p "$lists/partial"
apt-get "${apt[@]}" update -qq
(cd .device/gl && apt-get "${apt[@]}" download -qq libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
rm -rf "$lists"
du -sh .device
cat <<'CMD'
On the GPU machine (device tool: carry [".device"], timeout_s 600):
for f in .device/gl/*.deb; do dpkg -x $f /; done; ldconfig; e=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json; [ -f $e ] && export __EGL_VENDOR_LIBRARY_FILENAMES=$e; python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device/whl/*.whl || exit; export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 MUJOCO_GL=egl; nvidia-smi -L; set -o pipefail; python3 experiments/device_check.py --data_dir=.device --output=$OUT/device_check.json 2>&1 | tee $OUT/device_check.log
CMD
