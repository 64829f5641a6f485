# AVA v2.2, ViT-B (VideoMAE, Kinetics-400), keep rate 0.7 at the 4th/7th/10th blocks, short side 224:
# the paper's Tables 2-3 model (appendix A/B settings) as a detectron2 LazyConfig: configs/lazy/common/evad.py
# on AVA v2.2. The same model and run as configs/AVA/v2.2/EVAD_ViT-B_K400_rho0.7_224.yaml
# (tests/engine/test_lazy_config.py checks every value against it).
#   python train_net.py --config-file configs/lazy/EVAD_ViT-B_K400_rho0.7_224.py --num-gpus 8
#   python train_net.py --config-file configs/lazy/EVAD_ViT-B_K400_rho0.7_224.py --eval-only train.init_checkpoint=output/ava_v2.2/EVAD_ViT-B_K400_rho0.7_224_lazy/model_final.pth
from .common.evad import dataloader, lr_multiplier, model, optimizer, train, use_datasets  # noqa: F401 (the config is these objects)

TRAIN_SET, TEST_SET = "ava_v2.2_train", "ava_v2.2_val"

use_datasets(dataloader, TRAIN_SET, TEST_SET)
train.output_dir = "output/ava_v2.2/EVAD_ViT-B_K400_rho0.7_224_lazy"
