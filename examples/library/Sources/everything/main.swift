// Usage: everything CONFIG.json|l0|…|xl1 CHECKPOINT IMAGE
// SAM's automatic mask generator with a coarse grid; prints each mask's box and score.
import EVImage
import EVMask
import EVMaskGenerator
import EVModel
import Foundation

let arguments = CommandLine.arguments
guard arguments.count == 4 else {
  print("usage: everything CONFIG.json|l0|l1|l2|xl0|xl1 CHECKPOINT IMAGE")
  exit(2)
}
let config =
  arguments[1].hasSuffix(".json")
  ? try ModelConfig.load(json: URL(fileURLWithPath: arguments[1]))
  : .preset(try Variant.parse(arguments[1]))
let model = try EfficientViTSAM.load(
  config: config, checkpoint: URL(fileURLWithPath: arguments[2]))
let image = try RGBImage(contentsOf: URL(fileURLWithPath: arguments[3]))

var settings = MaskGeneratorSettings()
settings.pointsPerSide = 8
settings.predIoUThresh = 0
settings.stabilityScoreThresh = 0
let generator = try AutomaticMaskGenerator(model: model, settings: settings)
let result = try generator.generate(image)
print("\(result.masks.count) masks")
for m in result.masks.prefix(5) {
  print(m.bbox, m.predictedIoU, m.segmentation.cocoRLE.compressedCounts.prefix(16))
}
