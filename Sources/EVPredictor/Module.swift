import EVModel
import EVImage
