// Usage: prompt CONFIG.json|l0|…|xl1 CHECKPOINT IMAGE X Y
// Encodes the image once, then answers a click at (X, Y) and a box around it.
import EVImage
import EVModel
import EVPredictor
import Foundation

let arguments = CommandLine.arguments
guard arguments.count == 6, let x = Double(arguments[4]), let y = Double(arguments[5]) else {
  print("usage: prompt CONFIG.json|l0|l1|l2|xl0|xl1 CHECKPOINT IMAGE X Y")
  exit(2)
}
let config =
  arguments[1].hasSuffix(".json")
  ? try ModelConfig.load(json: URL(fileURLWithPath: arguments[1]))
  : .preset(try Variant.parse(arguments[1]))
let model = try EfficientViTSAM.load(
  config: config, checkpoint: URL(fileURLWithPath: arguments[2]))
let predictor = SamPredictor(model: model)
try predictor.setImage(try RGBImage(contentsOf: URL(fileURLWithPath: arguments[3])))

let click = try predictor.predict(points: [Point(x: x, y: y)], labels: [1], multimask: true)
print("click: scores \(click.iouPredictions), best mask \(click.masks.area(click.bestIndex)) px")
let box = try predictor.predict(
  box: Box(x0: x - 50, y0: y - 50, x1: x + 50, y1: y + 50), multimask: false)
print("box: score \(box.iouPredictions[0]), mask \(box.masks.area(0)) px")
