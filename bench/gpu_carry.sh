#!/bin/sh
# Assemble .gpu_carry/ (git-ignored) for a run of bench/gpu.py on a lent GPU machine that reaches no registry and
# has its own Python 3.12 + torch but not the pipeline's other packages, no ffmpeg and no ../shared:
#   whl/     the pipeline's packages that machine lacks, as cp312 manylinux wheels (about 30 MB)
#   data/    EPFL Terrace c0 / c1 (frames 300-699, people in view; re-encoded H.264) and PETS09 (frames 0-399)
#   models/  YOLO11n as PyTorch weights rebuilt from the shipped INT8 model (bench/yolo_from_openvino.py), OSNet x0.25
# Then, with the `device` tool: carry [".gpu_carry"] and run
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu_carry/whl/*.whl &&
#   PYTHONPATH=/tmp/site python3 bench/gpu.py --e2e-data .gpu_carry/data \
#     --e2e-detector .gpu_carry/models/yolo11n_from_int8.pt --e2e-reid .gpu_carry/models/osnet_x0_25_msmt17.pth --out ...
set -eu
cd "$(dirname "$0")/.."
SHARED=${MCSA_SHARED:-../shared}
C=.gpu_carry
grep -qx "/$C/" .git/info/exclude 2>/dev/null || echo "/$C/" >> .git/info/exclude
rm -rf "$C"
mkdir -p "$C/whl" "$C/data" "$C/models"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$C/whl" \
  ultralytics==8.4.190 faiss-cpu==1.15.1 ffmpeg-python==0.2.0 future==1.0.0 pydantic==2.14.4 pydantic-core==2.50.5 \
  annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0 SQLAlchemy==2.1.9 greenlet==3.5.6
python3 -m pip wheel -q --no-deps -w "$C/whl" filterpy==1.4.5   # published as a source archive only
FFMPEG=$(python3 -c "from streams.ffmpeg_util import ffmpeg_exe; print(ffmpeg_exe())")
for cam in c0 c1; do
  "$FFMPEG" -loglevel error -i "$SHARED/data/epfl_terrace1/terrace1-$cam.mp4" -vf "select=between(n\,300\,699)" \
    -fps_mode passthrough -c:v libx264 -crf 20 -an "$C/data/terrace1-$cam.mp4"
done
"$FFMPEG" -loglevel error -i "$SHARED/data/pets09_s2l1/vtest.avi" -frames:v 400 -c copy "$C/data/vtest.avi"
python3 bench/yolo_from_openvino.py --ir "$SHARED/models/yolo11n_int8_openvino_model" \
  --out "$C/models/yolo11n_from_int8.pt" --check "$SHARED/data/epfl_terrace1/terrace1-c0.mp4"
cp "$SHARED/models/osnet_x0_25_msmt17.pth" "$C/models/"
du -sh "$C"/*
