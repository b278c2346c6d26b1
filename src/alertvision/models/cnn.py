"""The baseline: BTSbot's custom CNN image branch (two convolutional blocks)."""

from __future__ import annotations

from torch import nn

#: The CNN's own keys of an ``archs.<name>`` block (kind cnn); sweeps may search them.
from alertvision.settings import CNN_KEYS  # noqa: F401  (re-exported: the CNN's own keys)


class BTSbotCNN(nn.Module):
    """Conv-Conv-MaxPool(2)-Dropout, Conv-Conv-MaxPool(4)-Dropout, flattened (BTSbot's image branch).

    The defaults are BTSbot's production model (train_configs/prod_config.json): channels 32 and 64,
    kernel 5, dropouts 0.50 and 0.55; ReLU, 'same' padding, channel dropout as its PyTorch port.
    """

    def __init__(
        self,
        in_chans: int = 3,
        image_size: int = 63,
        conv1_channels: int = 32,
        conv2_channels: int = 64,
        conv_kernel: int = 5,
        conv_dropout1: float = 0.50,
        conv_dropout2: float = 0.55,
    ):
        super().__init__()
        k = conv_kernel
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, conv1_channels, k, padding="same"),
            nn.ReLU(),
            nn.Conv2d(conv1_channels, conv1_channels, k, padding="same"),
            nn.ReLU(),
            nn.MaxPool2d(2, 2),
            nn.Dropout2d(conv_dropout1),
            nn.Conv2d(conv1_channels, conv2_channels, k, padding="same"),
            nn.ReLU(),
            nn.Conv2d(conv2_channels, conv2_channels, k, padding="same"),
            nn.ReLU(),
            nn.MaxPool2d(4, 4),
            nn.Dropout2d(conv_dropout2),
            nn.Flatten(),
        )
        self.num_features = conv2_channels * (image_size // 8) ** 2

    def forward(self, x):
        return self.features(x)
