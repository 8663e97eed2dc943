// A C++ consumer of cnnkit's AOTInductor package: loads model.aoti.pt2 with libtorch's AOTIModelPackageLoader (the
// torch wheel's own headers and libraries), runs it on a fixed uint8 batch and prints the model's cnnkit metadata
// key and the logits, one row per line, for benchmarks/aoti_cpp.py to compare with cnnkit's eager model.
//
//   aoti_consumer MODEL.aoti.pt2 N C H W
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/torch.h>

#include <cstdio>
#include <iostream>
#include <string>

int main(int argc, char** argv) {
  if (argc != 6) {
    std::cerr << "usage: aoti_consumer MODEL.aoti.pt2 N C H W\n";
    return 2;
  }
  const int64_t n = std::stoll(argv[2]), c = std::stoll(argv[3]), h = std::stoll(argv[4]), w = std::stoll(argv[5]);
  torch::inductor::AOTIModelPackageLoader loader(argv[1]);
  auto meta = loader.get_metadata();
  std::cout << "metadata " << (meta.count("cnnkit") ? "cnnkit" : "none") << " isa " << meta["AOTI_CPU_ISA"] << "\n";
  // the same pixels benchmarks/aoti_cpp.py makes: (7 * i + 3) mod 256 over the flattened batch
  auto x = (torch::arange(n * c * h * w, torch::kInt64) * 7 + 3).remainder(256).to(torch::kUInt8).reshape({n, c, h, w});
  torch::NoGradGuard no_grad;
  auto out = loader.run({x});
  auto logits = out.at(0).contiguous();
  for (int64_t i = 0; i < logits.size(0); ++i) {
    for (int64_t j = 0; j < logits.size(1); ++j) {
      std::printf(j ? " %.8e" : "%.8e", logits[i][j].item<float>());
    }
    std::printf("\n");
  }
  return 0;
}
