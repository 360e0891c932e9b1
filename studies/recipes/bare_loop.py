"""The baseline the recipe study is measured against: a bare ~40-line PyTorch loop (resnet18 from
scratch, 112 px, 6 epochs, AdamW with a one-cycle schedule, horizontal flips only), on the same
split files and images the pipeline uses. Prints its test accuracy and wall time: the time is the
budget a from-scratch recipe of the product gets on the same machine.

    python -m studies.recipes.bare_loop --split data/split --images data/raw/images
"""

import argparse
import csv
import json
import time

import torch
import torchvision
from PIL import Image
from torch import nn
from torchvision import transforms


class Bins(torch.utils.data.Dataset):
    def __init__(self, csv_path, images, tf):
        self.rows = [(r["id"], int(r["label"]) - 1) for r in csv.DictReader(open(csv_path))]
        self.images, self.tf = images, tf

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        bin_id, y = self.rows[i]
        return self.tf(Image.open(f"{self.images}/{bin_id}.jpg").convert("RGB")), y


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", default="data/split")
    ap.add_argument("--images", default="data/raw/images")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    start = time.time()
    norm = transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    train_tf = transforms.Compose(
        [transforms.Resize((args.size, args.size)), transforms.RandomHorizontalFlip(), transforms.ToTensor(), norm]
    )
    test_tf = transforms.Compose([transforms.Resize((args.size, args.size)), transforms.ToTensor(), norm])
    train = torch.utils.data.DataLoader(
        Bins(f"{args.split}/train.csv", args.images, train_tf), 32, shuffle=True, num_workers=2
    )
    test = torch.utils.data.DataLoader(Bins(f"{args.split}/test.csv", args.images, test_tf), 64, num_workers=2)
    model = torchvision.models.resnet18(num_classes=5)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 1e-3, total_steps=args.epochs * len(train))
    for epoch in range(args.epochs):
        model.train()
        for x, y in train:
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        print(f"epoch {epoch + 1}/{args.epochs} loss {loss.item():.3f} ({time.time() - start:.0f} s)", flush=True)
    model.eval()
    correct = n = 0
    with torch.no_grad():
        for x, y in test:
            correct += (model(x).argmax(1) == y).sum().item()
            n += len(y)
    print(
        json.dumps({"test_accuracy": correct / n, "n": n, "seconds": round(time.time() - start, 1), "seed": args.seed})
    )


if __name__ == "__main__":
    main()
