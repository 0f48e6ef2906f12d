// swift-tools-version:6.0
import PackageDescription

// Dependencies point one way:
// CBLAS ← EVTensor (tensor core, kernels) ← EVCheckpoint (.pt / safetensors, strict loading)
//   ← EVModel (layers, image encoder, prompt encoder, mask decoder) ← EVPredictor ← evsam (CLI)
// EVImage (decode / encode / PIL-exact resize) sits beside EVModel and feeds EVPredictor.
// EVMask (COCO RLE, contours) ← EVMaskGenerator, EVEvaluation ← EVTraining (its data readers) ← evsam;
// EVMask ← EVExport (COCO, YOLO-seg and LabelMe files) ← evsam;
// EVServer (HTTP, Hummingbird) ← evsam serve.
let package = Package(
  name: "EfficientViTSAM",
  platforms: [.macOS(.v14)],
  products: [
    .executable(name: "evsam", targets: ["evsam"]),
    // What a user imports; none but EVServer pulls in the HTTP stack.
    .library(name: "EVPredictor", targets: ["EVPredictor"]),
    .library(name: "EVModel", targets: ["EVModel"]),
    .library(name: "EVImage", targets: ["EVImage"]),
    .library(name: "EVMask", targets: ["EVMask"]),
    .library(name: "EVMaskGenerator", targets: ["EVMaskGenerator"]),
    .library(name: "EVExport", targets: ["EVExport"]),
    .library(name: "EVEvaluation", targets: ["EVEvaluation"]),
    .library(name: "EVCheckpoint", targets: ["EVCheckpoint"]),
    .library(name: "EVTensor", targets: ["EVTensor"]),
    .library(name: "EVServer", targets: ["EVServer"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.0.0"),
    .package(url: "https://github.com/apple/swift-http-types", from: "1.0.0"),
    .package(url: "https://github.com/apple/swift-log", from: "1.5.0"),
    .package(url: "https://github.com/apple/swift-nio", from: "2.65.0"),
  ],
  targets: [
    .systemLibrary(
      name: "CBLAS", path: "Sources/CBLAS", pkgConfig: "openblas",
      providers: [.apt(["libopenblas-dev"])]),
    .systemLibrary(
      name: "CPNG", path: "Sources/CPNG", pkgConfig: "libpng",
      providers: [.apt(["libpng-dev"])]),
    .systemLibrary(
      name: "CTurboJPEG", path: "Sources/CTurboJPEG", pkgConfig: "libturbojpeg",
      providers: [.apt(["libturbojpeg0-dev"])]),
    .systemLibrary(
      name: "CTIFF", path: "Sources/CTIFF", pkgConfig: "libtiff-4",
      providers: [.apt(["libtiff-dev"]), .brew(["libtiff"])]),
    .systemLibrary(
      name: "CWebP", path: "Sources/CWebP", pkgConfig: "libwebp",
      providers: [.apt(["libwebp-dev"]), .brew(["webp"])]),
    .systemLibrary(
      name: "CMPI", path: "Sources/CMPI", pkgConfig: "ompi-c",
      providers: [.apt(["libopenmpi-dev"]), .brew(["open-mpi"])]),
    // The MPI calls of data-parallel training behind plain C types (Open MPI's handles are
    // macros Swift cannot import); Linux only, single-process elsewhere.
    .target(name: "CCollectives", dependencies: ["CMPI"]),
    // libpng reports errors by longjmp, which must not cross Swift frames: this small C layer
    // catches them and returns error codes.
    .target(name: "CImageCodecs", dependencies: ["CPNG", "CTIFF"]),
    // AVX-512 and AVX2 versions of the hottest loops (one folder per level), chosen at run time
    // through per-function target attributes (no global flags): Swift itself compiles for
    // baseline x86-64, and its plain loops run wherever no vector version applies.
    .target(name: "CKernels"),
    .target(
      name: "EVTensor",
      dependencies: [
        "CKernels", .target(name: "CBLAS", condition: .when(platforms: [.linux])),
      ]),
    .target(name: "EVCheckpoint", dependencies: ["EVTensor"]),
    .target(name: "EVModel", dependencies: ["EVTensor", "EVCheckpoint"]),
    .target(name: "EVImage", dependencies: ["EVTensor", "CImageCodecs", "CTurboJPEG", "CWebP"]),
    .target(name: "EVPredictor", dependencies: ["EVModel", "EVImage", "EVCheckpoint"]),
    .target(name: "EVMask"),
    // Masks as annotation files: COCO (RLE or polygons), YOLO-seg, LabelMe, Label Studio's
    // brush RLE.
    .target(name: "EVExport", dependencies: ["EVMask"]),
    .target(name: "EVMaskGenerator", dependencies: ["EVPredictor", "EVMask"]),
    .target(
      name: "EVEvaluation", dependencies: ["EVPredictor", "EVMask", "EVModel", "EVImage"]),
    // The HTTP service (Hummingbird 2) and its web page; the model runs on its own threads.
    .target(
      name: "EVServer",
      dependencies: [
        "EVPredictor", "EVModel", "EVImage", "EVMask", "EVMaskGenerator", "EVTensor", "EVExport",
        .product(name: "Hummingbird", package: "hummingbird"),
        .product(name: "HTTPTypes", package: "swift-http-types"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "NIOCore", package: "swift-nio"),
      ]),
    // The load test's client: plain sockets, so it builds without the server's dependencies.
    .target(name: "EVLoadTest", dependencies: ["EVTensor"]),
    .executableTarget(
      name: "evsam",
      dependencies: [
        "EVPredictor", "EVModel", "EVImage", "EVCheckpoint", "EVMask", "EVMaskGenerator",
        "EVEvaluation", "EVServer", "EVTraining", "EVLoadTest", "EVExport",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "Logging", package: "swift-log"),
      ]),
    // The trainer: its own differentiable path on plain layers, the official loss, AdamW and
    // the schedule; the inference kernels stay untouched.
    .target(
      name: "EVTraining",
      dependencies: [
        "EVTensor", "EVCheckpoint", "EVModel", "EVImage", "EVMask", "EVEvaluation", "EVPredictor",
        .target(name: "CCollectives", condition: .when(platforms: [.linux])),
      ]),
    .target(
      name: "TestSupport", dependencies: ["EVTensor", "EVCheckpoint"], path: "Tests/TestSupport"),
    .testTarget(name: "EVTensorTests", dependencies: ["EVTensor", "TestSupport"]),
    .testTarget(
      name: "EVCheckpointTests", dependencies: ["EVCheckpoint", "EVTensor", "TestSupport"]),
    .testTarget(
      name: "EVModelTests",
      dependencies: ["EVModel", "EVImage", "EVCheckpoint", "EVTensor", "TestSupport"]),
    .testTarget(name: "EVMaskTests", dependencies: ["EVMask", "EVTensor", "TestSupport"]),
    .testTarget(name: "EVExportTests", dependencies: ["EVExport", "EVMask", "TestSupport"]),
    .testTarget(
      name: "EVTrainingTests",
      dependencies: [
        "EVTraining", "EVCheckpoint", "EVEvaluation", "EVImage", "EVModel", "EVPredictor",
        "EVTensor", "TestSupport",
      ]),
    .testTarget(
      name: "EVMaskGeneratorTests",
      dependencies: [
        "EVMaskGenerator", "EVPredictor", "EVModel", "EVImage", "EVMask", "EVCheckpoint",
        "EVTensor",
        "TestSupport",
      ]),
    .testTarget(
      name: "EVEvaluationTests",
      dependencies: ["EVEvaluation", "EVModel", "EVPredictor", "EVMask", "TestSupport"]),
    .testTarget(name: "EVImageTests", dependencies: ["EVImage", "EVTensor", "TestSupport"]),
    .testTarget(
      name: "EVPredictorTests",
      dependencies: [
        "EVPredictor", "EVModel", "EVImage", "EVCheckpoint", "EVTensor", "TestSupport",
      ]),
    .testTarget(
      name: "evsamTests",
      dependencies: [
        "evsam", "EVCheckpoint", "EVEvaluation", "EVImage", "EVMask", "EVTensor", "TestSupport",
      ]),
    .testTarget(
      name: "EVServerTests",
      dependencies: [
        "EVServer", "EVImage", "EVMask", "EVMaskGenerator", "EVModel", "EVPredictor",
        "EVCheckpoint", "EVTensor", "EVLoadTest", "TestSupport",
        .product(name: "Hummingbird", package: "hummingbird"),
        .product(name: "HummingbirdTesting", package: "hummingbird"),
        .product(name: "HTTPTypes", package: "swift-http-types"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "NIOCore", package: "swift-nio"),
      ]),
  ]
)
