/* synth_lists: the fixed vocabulary of the synthetic preference task (see synth.h).
 *
 * These lists ARE the task's definition: changing a word changes every score, so they
 * are frozen. Tests check the invariants: >= 20 topics, >= 30 words per list, all words
 * lowercase ASCII letters, no word in two lists, no topic or rude word in any neutral
 * text, topic names in no list. */
#include "data/synth_lists.h"

const char *const data_synth_topic_names[SYNTH_NTOPICS] = {
    "gardening", "cooking", "astronomy", "music", "football", "ocean",
    "photography", "painting", "computers", "birds", "history", "fitness",
    "weather", "travel", "chess", "camping", "dogs", "cats",
    "coffee", "mountains", "cars", "books", "bicycles", "farming",
};

const char *const data_synth_topic_lists[SYNTH_NTOPICS][SYNTH_NWORDS] = {
    /* gardening */ {
        "soil", "compost", "seeds", "shovel", "trowel", "mulch", "weeds", "tulips",
        "roses", "hedge", "rake", "greenhouse", "fertilizer", "seedlings", "pruning",
        "hose", "sprinkler", "bulbs", "perennials", "annuals", "trellis", "vines", "lawn",
        "manure", "earthworms", "flowerbed", "daisies", "lavender", "marigolds", "hoe",
        "wheelbarrow", "shrubs",
    },
    /* cooking */ {
        "oven", "skillet", "saucepan", "spatula", "whisk", "recipe", "simmer", "saute",
        "braise", "garlic", "onions", "butter", "flour", "broth", "seasoning", "knife",
        "marinade", "casserole", "ladle", "stew", "pepper", "salt", "colander", "grill",
        "dough", "bake", "sauce", "vinegar", "blender", "apron", "stove", "herbs",
    },
    /* astronomy */ {
        "telescope", "planets", "galaxy", "nebula", "comet", "asteroid", "orbit", "stars",
        "constellation", "meteor", "eclipse", "supernova", "quasar", "pulsar", "moon",
        "jupiter", "saturn", "mars", "venus", "mercury", "cosmos", "observatory",
        "lightyears", "universe", "solar", "lunar", "equinox", "zenith", "redshift",
        "exoplanet", "meteorite", "starlight",
    },
    /* music */ {
        "guitar", "piano", "violin", "drums", "melody", "harmony", "rhythm", "chord",
        "tempo", "orchestra", "symphony", "concert", "lyrics", "chorus", "verse",
        "trumpet", "saxophone", "flute", "cello", "bass", "notes", "scales", "composer",
        "conductor", "album", "song", "singer", "microphone", "tuning", "octave",
        "metronome", "rehearsal",
    },
    /* football */ {
        "goal", "striker", "goalkeeper", "defender", "midfielder", "penalty", "referee",
        "offside", "stadium", "kickoff", "header", "tackle", "dribble", "pitch", "league",
        "tournament", "captain", "jersey", "cleats", "halftime", "assist", "freekick",
        "crossbar", "goalpost", "substitute", "coach", "fans", "trophy", "match", "winger",
        "shootout", "ball",
    },
    /* ocean */ {
        "waves", "tide", "coral", "reef", "seaweed", "dolphins", "whales", "sharks",
        "jellyfish", "plankton", "currents", "seafloor", "shoreline", "beach", "sand",
        "shells", "octopus", "squid", "kelp", "lagoon", "salinity", "surf", "seagulls",
        "crabs", "starfish", "oysters", "trench", "abyss", "seals", "turtles", "estuary",
        "tsunami",
    },
    /* photography */ {
        "camera", "lens", "shutter", "aperture", "exposure", "tripod", "flash", "zoom",
        "portrait", "pixels", "sensor", "film", "darkroom", "viewfinder", "megapixels",
        "lighting", "snapshot", "photographer", "selfie", "filter", "bokeh", "telephoto",
        "autofocus", "histogram", "monochrome", "retouching", "framing", "prints",
        "negatives", "lenscap", "polaroid", "panorama",
    },
    /* painting */ {
        "canvas", "brush", "easel", "palette", "acrylic", "watercolor", "oils", "pigment",
        "sketch", "mural", "fresco", "gallery", "landscape", "stroke", "hue", "shading",
        "varnish", "turpentine", "gouache", "impressionism", "masterpiece", "artist",
        "studio", "primer", "crimson", "ochre", "cobalt", "charcoal", "pastel", "abstract",
        "collage", "tint",
    },
    /* computers */ {
        "keyboard", "mouse", "monitor", "processor", "memory", "software", "hardware",
        "laptop", "desktop", "server", "network", "database", "algorithm", "compiler",
        "program", "browser", "email", "password", "printer", "router", "motherboard",
        "chip", "cache", "kernel", "storage", "cursor", "download", "spreadsheet",
        "bandwidth", "firmware", "debugging", "internet",
    },
    /* birds */ {
        "sparrow", "robin", "eagle", "hawk", "owl", "parrot", "feathers", "nest", "beak",
        "wings", "migration", "flock", "pigeon", "crow", "raven", "hummingbird",
        "woodpecker", "finch", "heron", "pelican", "flamingo", "penguin", "ostrich",
        "swan", "duck", "goose", "canary", "falcon", "songbird", "birdwatching",
        "binoculars", "plumage",
    },
    /* history */ {
        "empire", "dynasty", "revolution", "kingdom", "pharaoh", "castle", "medieval",
        "ancient", "archive", "treaty", "monarchy", "republic", "crusades", "renaissance",
        "artifacts", "chronicle", "emperor", "colony", "pyramids", "scrolls", "battle",
        "war", "parliament", "heritage", "civilization", "century", "historian",
        "conquest", "siege", "feudal", "senate", "legion",
    },
    /* fitness */ {
        "exercise", "workout", "gym", "treadmill", "dumbbells", "squats", "pushups",
        "stretching", "cardio", "muscles", "protein", "endurance", "jogging", "sprint",
        "yoga", "pilates", "barbell", "kettlebell", "situps", "lunges", "calories",
        "hydration", "stamina", "warmup", "cooldown", "weights", "trainer", "reps",
        "aerobics", "posture", "flexibility", "cycling",
    },
    /* weather */ {
        "rain", "snow", "thunder", "lightning", "clouds", "wind", "storm", "hurricane",
        "tornado", "forecast", "humidity", "temperature", "drizzle", "hail", "fog",
        "sunshine", "rainbow", "blizzard", "breeze", "frost", "drought", "monsoon",
        "thermometer", "barometer", "umbrella", "climate", "heatwave", "sleet", "overcast",
        "gust", "meteorologist", "raincoat",
    },
    /* travel */ {
        "passport", "luggage", "suitcase", "airport", "flight", "hotel", "itinerary",
        "tourist", "visa", "backpack", "map", "journey", "destination", "vacation",
        "cruise", "ticket", "souvenir", "sightseeing", "hostel", "guidebook", "customs",
        "boarding", "jetlag", "reservation", "postcard", "abroad", "excursion", "layover",
        "taxi", "railway", "currency", "train",
    },
    /* chess */ {
        "pawn", "knight", "bishop", "rook", "queen", "king", "checkmate", "castling",
        "gambit", "endgame", "stalemate", "chessboard", "grandmaster", "opening",
        "sacrifice", "fork", "pin", "skewer", "tactics", "strategy", "blitz", "rating",
        "opponent", "promotion", "zugzwang", "check", "squares", "pieces", "diagonal",
        "notation", "resign", "capture",
    },
    /* camping */ {
        "tent", "campfire", "sleepingbag", "lantern", "firewood", "marshmallows", "hiking",
        "trail", "canoe", "compass", "flashlight", "cooler", "tarp", "kindling",
        "wilderness", "cabin", "hammock", "mosquitoes", "ranger", "campsite", "canteen",
        "rope", "knots", "axe", "logs", "pine", "creek", "bears", "forest", "paddle",
        "bonfire", "headlamp",
    },
    /* dogs */ {
        "puppy", "leash", "collar", "bark", "fetch", "kennel", "breed", "retriever",
        "poodle", "beagle", "terrier", "bulldog", "labrador", "dachshund", "veterinarian",
        "treats", "tail", "paws", "fur", "obedience", "grooming", "kibble", "bone", "chew",
        "howl", "sniff", "shepherd", "greyhound", "doghouse", "vaccinations", "husky",
        "chihuahua",
    },
    /* cats */ {
        "kitten", "whiskers", "purr", "meow", "litter", "scratching", "catnip", "tabby",
        "siamese", "persian", "claws", "hairball", "feline", "pounce", "yarn", "mice",
        "tuna", "calico", "tomcat", "kitty", "mittens", "windowsill", "hiss", "sphynx",
        "ragdoll", "bengal", "laserpointer", "tortoiseshell", "sardines", "cattree",
        "birman", "cushion",
    },
    /* coffee */ {
        "espresso", "latte", "cappuccino", "beans", "roast", "barista", "grinder", "mocha",
        "caffeine", "brew", "drip", "mug", "cafe", "arabica", "robusta", "crema", "foam",
        "decaf", "americano", "macchiato", "frappe", "creamer", "sugar", "percolator",
        "pourover", "aroma", "cup", "saucer", "roaster", "milk", "kettle", "cortado",
    },
    /* mountains */ {
        "peak", "summit", "glacier", "cliff", "ridge", "valley", "avalanche", "altitude",
        "climber", "harness", "crampons", "icepick", "sherpa", "everest", "alps",
        "himalayas", "boulder", "slope", "rockslide", "snowcap", "basecamp", "trekking",
        "elevation", "crevasse", "foothills", "plateau", "volcano", "canyon", "granite",
        "scree", "bivouac", "oxygen",
    },
    /* cars */ {
        "engine", "tires", "brakes", "steering", "gearbox", "clutch", "transmission",
        "headlights", "windshield", "bumper", "dashboard", "mechanic", "garage",
        "gasoline", "diesel", "battery", "exhaust", "sedan", "convertible", "horsepower",
        "odometer", "speedometer", "ignition", "radiator", "muffler", "airbag", "seatbelt",
        "highway", "parking", "wipers", "carburetor", "chassis",
    },
    /* books */ {
        "novel", "chapter", "author", "library", "paperback", "hardcover", "poetry",
        "fiction", "biography", "plot", "characters", "bookshelf", "publisher",
        "bestseller", "paragraph", "prologue", "epilogue", "narrator", "bookmark",
        "librarian", "literature", "memoir", "anthology", "sequel", "trilogy",
        "manuscript", "glossary", "editor", "fairytale", "storytelling", "novelist",
        "bookstore",
    },
    /* bicycles */ {
        "pedals", "chain", "handlebars", "saddle", "spokes", "wheels", "gears", "helmet",
        "derailleur", "tandem", "bmx", "innertube", "pump", "kickstand", "bell", "cyclist",
        "bikelane", "sprocket", "crankset", "frame", "rim", "puncture", "reflector",
        "basket", "tricycle", "unicycle", "velodrome", "peloton", "pannier", "toeclips",
        "lycra", "freewheel",
    },
    /* farming */ {
        "tractor", "barn", "crops", "wheat", "corn", "cattle", "plow", "hay", "silo",
        "orchard", "irrigation", "livestock", "pasture", "harvest", "farmer", "chickens",
        "pigs", "sheep", "goats", "cows", "fence", "barley", "oats", "rooster",
        "scarecrow", "dairy", "ranch", "stables", "horses", "grain", "farmhouse", "acres",
    },
};

/* Mild insults, no slurs: adjectives first (they take "$j"/"$J" slots), then nouns. */
const char *const data_synth_rude_list[SYNTH_NRUDE] = {
    "stupid", "dumb", "foolish", "clueless", "pathetic", "useless", "worthless",
    "ridiculous", "ignorant", "brainless", "witless", "dopey", "idiotic", "dimwitted",
    "incompetent", "hopeless", "idiot", "fool", "dimwit", "dunce", "nitwit", "halfwit",
    "numbskull", "bonehead", "blockhead", "airhead", "dolt", "loser", "jerk", "buffoon",
    "nincompoop", "clown",
};

/* Prompt parts: opener + template (with the topic name for %s) + closer. */
const char *const data_synth_openers[SYNTH_NOPENERS] = {
    "", "Hello. ", "Hi there. ", "Quick question. ", "Please help. ",
};

const char *const data_synth_templates[SYNTH_NTEMPLATES] = {
    "Tell me about %s.", "What do you know about %s?", "Can you explain %s to me?",
    "I want to learn about %s.", "Share some thoughts on %s.", "Say something about %s.",
    "Talk to me about %s.", "What should I know about %s?", "Teach me about %s.",
    "Write a few sentences about %s.",
};

const char *const data_synth_closers[SYNTH_NCLOSERS] = {
    "", " Thanks.", " Keep it short.", " I am curious.", " Be detailed.",
};

/* Neutral filler sentences: no topic word of any topic, no rude word. */
const char *const data_synth_fillers[SYNTH_NFILLERS] = {
    "That is a good question.", "I am happy to help with that.", "Here is what I think.",
    "There is a lot to say about this.", "Let me explain a few things.",
    "I hope this is helpful.", "Many people ask about this.",
    "It is worth thinking about.", "This can be a lot of fun.",
    "There are many ways to look at it.", "Let me know if you want more.",
    "I will try to keep it simple.", "Some of this may surprise you.",
    "It depends on what you want.", "Thanks for asking.", "Here are a few ideas.",
    "People have different opinions on this.", "It takes some practice.",
    "You can learn more over time.", "Everyone starts somewhere.",
    "I find this interesting.", "Take your time with it.",
};

/* On-topic sentences: each "$t" takes a topic word, distinct within the sentence. */
const char *const data_synth_topic_sentences[SYNTH_NTOPIC_SENTENCES] = {
    "Think about the $t.", "Do not forget the $t.", "People often talk about $t and $t.",
    "I would start with the $t.", "A lot depends on the $t.",
    "Start with the $t, then the $t, then the $t.", "The $t and the $t go well together.",
    "Many experts mention $t, $t and $t.", "Consider the $t first.",
    "My favorite part is the $t.", "You will want to learn about $t.",
    "Keep an eye on the $t and the $t.",
};

/* Rude sentences: "$j" a rude adjective, "$n" a rude noun, "$J"/"$N" the same with
 * "a"/"an" in front. */
const char *const data_synth_rude_sentences[SYNTH_NRUDE_SENTENCES] = {
    "That is $J question.", "Only $N would ask that.", "You are such $N.",
    "What $J thing to ask.", "Stop being so $j.", "Honestly, you sound $j.",
    "Do not be $N.", "Nobody cares, you $n.", "Ask something less $j next time.",
    "Are you $N or just $j?",
};
