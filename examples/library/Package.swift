// swift-tools-version:6.0
// Programs that use EfficientViT-SAM as a library, the way a user's package does: the project is
// a dependency by path (`EfficientViTSAM` is a link to it, so that its identity does not depend
// on the folder it was cloned into). `scripts/check-examples` builds them and runs them on the
// fixtures; `readme` is the README's Swift snippets, extracted (and checked to be current) by
// the same script.
import PackageDescription

let package = Package(
  name: "LibraryExamples",
  platforms: [.macOS(.v14)],
  dependencies: [.package(path: "EfficientViTSAM")],
  targets: [
    .executableTarget(
      name: "prompt",
      dependencies: [
        .product(name: "EVPredictor", package: "EfficientViTSAM"),
        .product(name: "EVModel", package: "EfficientViTSAM"),
        .product(name: "EVImage", package: "EfficientViTSAM"),
      ]),
    .executableTarget(
      name: "everything",
      dependencies: [
        .product(name: "EVMaskGenerator", package: "EfficientViTSAM"),
        .product(name: "EVModel", package: "EfficientViTSAM"),
        .product(name: "EVImage", package: "EfficientViTSAM"),
        .product(name: "EVMask", package: "EfficientViTSAM"),
      ]),
    .executableTarget(
      name: "readme",
      dependencies: [
        .product(name: "EVPredictor", package: "EfficientViTSAM"),
        .product(name: "EVModel", package: "EfficientViTSAM"),
        .product(name: "EVImage", package: "EfficientViTSAM"),
        .product(name: "EVMaskGenerator", package: "EfficientViTSAM"),
        .product(name: "EVExport", package: "EfficientViTSAM"),
      ]),
  ]
)
