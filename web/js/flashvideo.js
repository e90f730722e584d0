// FlashVideo web extension. Kept deliberately small: the graph UI comes with the
// stage-II nodes (token count / time estimate readout, "refine this preview").
import { app } from "../../scripts/app.js";

app.registerExtension({
  name: "FlashVideo.Core",
});
