import EVCheckpoint
import EVTensor
import EVTraining
import Foundation
import TestSupport
import Testing

/// AdamW, the value clipping and the schedule against the official step (`train/step.*`):
/// the 22 picked parameters of `tiny-l.pt`, their official gradients, clipped at 2.0 and
/// applied with lr 1e-4, weight decay 0.1 except `norm`/`bias`, give the official values.
@Suite struct OptimizerTests {
  @Test func oneStepMatchesTheOfficialOptimiser() throws {
    let step = try SafeTensors.read(contentsOf: Fixtures.url("train/step.safetensors"))
    let json = try #require(
      JSONSerialization.jsonObject(with: Data(contentsOf: Fixtures.url("train/step.json")))
        as? [String: Any])
    let names = try #require(json["picked_parameters"] as? [String])
    #expect(names.count == 22)
    let model = try Checkpoint.load(contentsOf: Fixtures.url("models/tiny-l.pt"))
    var parameters: [String: Tensor] = [:]
    var gradients: [String: Tensor] = [:]
    for name in names {
      let parameter: Tensor = try #require(model[name])
      let gradient: Tensor = try #require(step["grad.\(name)"])
      parameters[name] = parameter
      gradients[name] = gradient
    }
    clipGradientValues(&gradients, limit: Float(try #require(json["grad_clip_value"] as? Double)))
    var settings = AdamW.Settings()
    settings.weightDecay = try #require(json["weight_decay"] as? Double)
    let optimizer = AdamW(settings: settings)
    optimizer.update(&parameters, gradients: gradients, lr: try #require(json["lr"] as? Double))
    for name in names {
      let expected = try #require(step["after_step.\(name)"])
      let ours = try #require(parameters[name])
      let error = relativeL2Error(ours, expected)
      #expect(error <= 1e-6, "\(name): relative L2 \(error)")
    }
    #expect(optimizer.step == 1)
  }

  @Test func decayFollowsTheNoDecayKeys() {
    let s = AdamW.Settings()
    #expect(s.decays("mask_decoder.transformer.layers.0.self_attn.q_proj.weight"))
    #expect(!s.decays("mask_decoder.transformer.layers.0.self_attn.q_proj.bias"))
    #expect(!s.decays("image_encoder.norm.weight"))
    #expect(!s.decays("mask_decoder.transformer.norm_final_attn.weight"))
  }

  @Test func cosineScheduleAsTheOfficialOne() {
    let schedule = CosineSchedule(baseLR: 1e-3, decaySteps: 100)
    #expect(schedule.lr(at: 0) == 1e-3)
    #expect(abs(schedule.lr(at: 50) - 5e-4) < 1e-15)
    #expect(schedule.lr(at: 100) == 0)
    let warm = CosineSchedule(baseLR: 1e-3, decaySteps: 10, warmupSteps: 4, warmupLR: 0)
    #expect(abs(warm.lr(at: 0) - 2.5e-4) < 1e-15)
    #expect(abs(warm.lr(at: 3) - 1e-3) < 1e-15)
    #expect(warm.lr(at: 4) == 1e-3)
  }
}
